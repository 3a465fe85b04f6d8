-- Pipeline variables (plain) and secrets (sealed with the instance key) per project, optionally
-- per environment ('' = every environment). A secret's value column holds only the sealed form.
CREATE TABLE build_variables (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    environment TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX build_variables_key ON build_variables(project_id, kind, environment, name);
