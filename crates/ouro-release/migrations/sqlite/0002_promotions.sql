-- Promotion path: the project's environments when the release's commit has no
-- .ouro/environments.yml (the same YAML, kept as text), promotion requests of a release to an
-- environment (requested -> approved | rejected; the environment's gate configuration is kept as
-- JSON so re-evaluation needs no git), and the approvals and rejections with who, when, comment.
CREATE TABLE release_environment_settings (
    project_id BIGINT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    config TEXT NOT NULL,
    updated_by BIGINT,
    updated_at BIGINT NOT NULL
);

CREATE TABLE release_promotions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    release_id BIGINT NOT NULL REFERENCES release_releases(id) ON DELETE CASCADE,
    environment TEXT NOT NULL,
    state TEXT NOT NULL,
    env_config TEXT NOT NULL,
    config_source TEXT NOT NULL,
    gates TEXT NOT NULL,
    requested_by BIGINT NOT NULL,
    requested_at BIGINT NOT NULL,
    decided_at BIGINT,
    reason TEXT
);
-- One open or approved promotion per release and environment; a rejected one may be requested again.
CREATE UNIQUE INDEX release_promotions_open ON release_promotions(release_id, environment) WHERE state <> 'rejected';
CREATE INDEX release_promotions_project ON release_promotions(project_id, state);

CREATE TABLE release_approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    promotion_id BIGINT NOT NULL REFERENCES release_promotions(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL,
    decision TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX release_approvals_user ON release_approvals(promotion_id, user_id);
