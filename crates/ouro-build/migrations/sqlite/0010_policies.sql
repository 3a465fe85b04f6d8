-- Run policies (issue 5): `continue-on-error` kept on the job, so the server derives the run's
-- status and readiness of dependents without re-reading the pipeline file; the pipeline-level
-- `concurrency` group of a run (rendered at creation; NULL: none): the runs of a group go one at
-- a time, in order; and the index that finds the runs of a commit (`runs::for_commit`).
ALTER TABLE build_jobs ADD COLUMN continue_on_error BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE build_runs ADD COLUMN concurrency_group TEXT;
CREATE INDEX build_runs_group ON build_runs(project_id, concurrency_group, status);
CREATE INDEX build_runs_repo_sha ON build_runs(repo_id, sha);
