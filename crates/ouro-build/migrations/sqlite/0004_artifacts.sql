-- Artifacts (files a job kept, by path, pointing at a blob of the content-addressed store) and
-- caches (one archive per project and key, evicted least-recently-used within a quota).
CREATE TABLE build_artifacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    run_id BIGINT NOT NULL REFERENCES build_runs(id) ON DELETE CASCADE,
    job_id BIGINT NOT NULL REFERENCES build_jobs(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    expires_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX build_artifacts_path ON build_artifacts(job_id, path);
CREATE INDEX build_artifacts_run ON build_artifacts(run_id);
CREATE INDEX build_artifacts_expiry ON build_artifacts(expires_at);
CREATE INDEX build_artifacts_sha ON build_artifacts(sha256);

CREATE TABLE build_caches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    cache_key TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX build_caches_key ON build_caches(project_id, cache_key);
CREATE INDEX build_caches_sha ON build_caches(sha256);
