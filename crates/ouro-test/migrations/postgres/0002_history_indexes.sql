-- Indexes for flaky scoring at ingestion (bench/test-store.py): both outcomes on one commit looks
-- test runs up by commit; the flip rate and the baseline read the last runs of one job on one
-- branch, which test_runs_ref (project, repo, ref, id) serves only by project when no repository
-- is given.
CREATE INDEX test_runs_sha ON test_runs(project_id, sha);
CREATE INDEX test_runs_job_ref ON test_runs(project_id, git_ref, job_key, id);
