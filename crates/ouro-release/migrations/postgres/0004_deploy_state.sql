-- What Deploy did with an approved promotion (learnt from its events): `deploying`, `deployed`
-- (with when) or `failed`; NULL when no deployment followed (a project without services). The
-- next environment's order and wait timer count from the deployment when there is one. And the
-- per-project switch that requests the next environment's promotion after a deployment succeeded.
ALTER TABLE release_promotions ADD COLUMN deploy_state TEXT;
ALTER TABLE release_promotions ADD COLUMN deployed_at BIGINT;
ALTER TABLE release_settings ADD COLUMN auto_promote BOOLEAN NOT NULL DEFAULT FALSE;
