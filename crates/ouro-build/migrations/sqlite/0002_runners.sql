-- Runners: what a job needs from its runner (runs-on labels, retry policy) and the runners
-- themselves (registered with a one-time registration token; their token is stored hashed).
ALTER TABLE build_jobs ADD COLUMN labels TEXT NOT NULL DEFAULT '[]';
ALTER TABLE build_jobs ADD COLUMN retry_max BIGINT NOT NULL DEFAULT 0;
ALTER TABLE build_jobs ADD COLUMN retry_when TEXT NOT NULL DEFAULT '[]';
CREATE INDEX build_jobs_lease ON build_jobs(status, lease_expires_at);

CREATE TABLE build_runner_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    used_at BIGINT
);
CREATE UNIQUE INDEX build_runner_tokens_hash ON build_runner_tokens(token_hash);

CREATE TABLE build_runners (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash TEXT,
    labels TEXT NOT NULL DEFAULT '[]',
    executors TEXT NOT NULL DEFAULT '[]',
    slots BIGINT NOT NULL DEFAULT 1,
    draining BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    last_contact_at BIGINT
);
CREATE UNIQUE INDEX build_runners_token ON build_runners(token_hash);
