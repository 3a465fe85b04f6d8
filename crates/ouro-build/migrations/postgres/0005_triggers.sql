-- Triggers, concurrency groups, limits, priorities and re-runs.
-- A run remembers the change request it builds (cr_number), whether its author is trusted (a
-- member with at least developer: untrusted runs get no secrets), its claim priority (higher
-- first), the run it re-runs, and the typed manual inputs.
ALTER TABLE build_runs ADD COLUMN cr_number BIGINT;
ALTER TABLE build_runs ADD COLUMN trusted BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE build_runs ADD COLUMN priority BIGINT NOT NULL DEFAULT 1;
ALTER TABLE build_runs ADD COLUMN rerun_of BIGINT;
ALTER TABLE build_runs ADD COLUMN inputs TEXT NOT NULL DEFAULT '{}';

-- A job's concurrency group (rendered at run creation; NULL: none) and, for a re-run, the
-- number of the run whose result it reuses.
ALTER TABLE build_jobs ADD COLUMN concurrency_group TEXT;
ALTER TABLE build_jobs ADD COLUMN reused_from BIGINT;
CREATE INDEX build_jobs_group ON build_jobs(concurrency_group, status);

-- Row locks that serialize claims per concurrency group and per project limit (name '' is
-- the project's running-job limit).
CREATE TABLE build_claim_locks (
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    claims BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, name)
);

-- Per-project build settings: at most this many running jobs (NULL: unlimited).
CREATE TABLE build_settings (
    project_id BIGINT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    max_running_jobs BIGINT
);

-- The schedules of the default branch's pipeline files: one row per cron entry, with the next
-- time it is due (ms since the epoch, UTC). Recomputed when the default branch moves.
CREATE TABLE build_schedules (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    repo_id BIGINT NOT NULL REFERENCES code_repos(id) ON DELETE CASCADE,
    file TEXT NOT NULL,
    entry BIGINT NOT NULL,
    cron TEXT NOT NULL,
    next_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX build_schedules_entry ON build_schedules(repo_id, file, entry);
CREATE INDEX build_schedules_due ON build_schedules(next_at);
