-- Hosted git repositories. The bare repository lives at DATA_DIR/repos/<project_id>/<id>.git
-- (ids, not names, so a rename moves no files). kind: empty | import | mirror; source_url is the
-- URL an import or mirror was cloned from.
CREATE TABLE code_repos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    default_branch TEXT NOT NULL,
    kind TEXT NOT NULL,
    source_url TEXT,
    created_by BIGINT REFERENCES users(id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX code_repos_name ON code_repos(project_id, name);
