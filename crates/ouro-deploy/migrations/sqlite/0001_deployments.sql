-- Deploy: what runs where. One row per project environment with the live and previous release
-- (rollback puts the previous one back) and the desired state the server restores after a
-- restart (JSON: the services, their versions, bundles and traffic split); deployments with
-- who, what, strategy, outcome; and their steps with timings and details.
CREATE TABLE deploy_environments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    live_release_id BIGINT,
    live_version TEXT,
    previous_release_id BIGINT,
    previous_version TEXT,
    desired TEXT,
    updated_at BIGINT NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE deploy_deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    environment TEXT NOT NULL,
    release_id BIGINT NOT NULL,
    version TEXT NOT NULL,
    from_version TEXT,
    kind TEXT NOT NULL,
    strategy TEXT NOT NULL,
    state TEXT NOT NULL,
    promotion_id BIGINT,
    actor TEXT NOT NULL,
    reason TEXT,
    started_at BIGINT NOT NULL,
    finished_at BIGINT
);
-- At most one running deployment per environment.
CREATE UNIQUE INDEX deploy_deployments_running ON deploy_deployments(project_id, environment) WHERE state = 'running';
CREATE INDEX deploy_deployments_env ON deploy_deployments(project_id, environment, id);
CREATE INDEX deploy_deployments_release ON deploy_deployments(release_id);

CREATE TABLE deploy_steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id BIGINT NOT NULL REFERENCES deploy_deployments(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    service TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    UNIQUE (deployment_id, seq)
);
