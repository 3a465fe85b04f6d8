-- Pipeline runs (numbered per project, never reused) and their jobs. Job rows carry the lease
-- columns of the runner protocol: a runner claims a queued job, gets an attempt token and a
-- lease; a job whose lease expires can be claimed again with a new token.
CREATE TABLE build_counters (
    project_id BIGINT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    last_number BIGINT NOT NULL
);

CREATE TABLE build_runs (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    repo_id BIGINT REFERENCES code_repos(id) ON DELETE SET NULL,
    repo_name TEXT NOT NULL,
    number BIGINT NOT NULL,
    trigger_kind TEXT NOT NULL,
    source_key TEXT,
    git_ref TEXT NOT NULL,
    sha TEXT NOT NULL,
    actor TEXT NOT NULL,
    status TEXT NOT NULL,
    file TEXT NOT NULL,
    name TEXT NOT NULL,
    diagnostics TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX build_runs_number ON build_runs(project_id, number);
CREATE UNIQUE INDEX build_runs_source ON build_runs(project_id, source_key, file);
CREATE INDEX build_runs_status ON build_runs(project_id, status);

CREATE TABLE build_jobs (
    id BIGSERIAL PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES build_runs(id) ON DELETE CASCADE,
    job_key TEXT NOT NULL,
    name TEXT NOT NULL,
    needs TEXT NOT NULL DEFAULT '[]',
    matrix TEXT NOT NULL DEFAULT '{}',
    layer BIGINT NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    attempt BIGINT NOT NULL DEFAULT 0,
    runner_id TEXT,
    lease_expires_at BIGINT,
    attempt_token TEXT,
    started_at BIGINT,
    finished_at BIGINT,
    exit_code BIGINT,
    reason TEXT,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX build_jobs_key ON build_jobs(run_id, job_key);
CREATE INDEX build_jobs_status ON build_jobs(status, id);
