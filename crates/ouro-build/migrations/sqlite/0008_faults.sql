-- The whole trigger of a run, so a runner plans its jobs exactly as the run was created: the
-- planner's event (for a re-run: the event of the run it re-runs) and a change request's target
-- branch. (The typed manual inputs are in `inputs` since 0005.)
ALTER TABLE build_runs ADD COLUMN event TEXT;
ALTER TABLE build_runs ADD COLUMN target_branch TEXT;

-- Whether a job's `if:` may let it run after a needed job failed, was cancelled or was skipped
-- (`always()`, `failure()`, ...): such a job is not skipped with its failed needs; a runner
-- decides its `if:` once all its needs have finished.
ALTER TABLE build_jobs ADD COLUMN after_failure BOOLEAN NOT NULL DEFAULT FALSE;
