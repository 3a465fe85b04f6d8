-- Test results: one test_runs row per job attempt that reported, the cases of a project by their
-- identity key, one result per case and run, coverage per file, flaky tests and quarantines.
CREATE TABLE test_runs (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    build_run_id BIGINT NOT NULL,
    run_number BIGINT NOT NULL,
    job_id BIGINT NOT NULL,
    job_key TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    repo_id BIGINT,
    git_ref TEXT NOT NULL,
    sha TEXT NOT NULL,
    cr_number BIGINT,
    baseline_id BIGINT,
    total BIGINT NOT NULL,
    passed BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    skipped BIGINT NOT NULL,
    errored BIGINT NOT NULL,
    flaky BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    lines_covered BIGINT,
    lines_total BIGINT,
    branches_covered BIGINT,
    branches_total BIGINT,
    errors TEXT NOT NULL,
    gate TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX test_runs_attempt ON test_runs(job_id, attempt);
CREATE INDEX test_runs_run ON test_runs(build_run_id);
CREATE INDEX test_runs_ref ON test_runs(project_id, repo_id, git_ref, id);

CREATE TABLE test_cases (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    case_key TEXT NOT NULL,
    suite TEXT NOT NULL,
    class TEXT NOT NULL,
    name TEXT NOT NULL,
    file TEXT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX test_cases_key ON test_cases(project_id, case_key);

CREATE TABLE test_results (
    id BIGSERIAL PRIMARY KEY,
    test_run_id BIGINT NOT NULL REFERENCES test_runs(id) ON DELETE CASCADE,
    case_id BIGINT NOT NULL REFERENCES test_cases(id) ON DELETE CASCADE,
    outcome TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    flaky BOOLEAN NOT NULL,
    duration_ms BIGINT,
    message TEXT,
    kind TEXT,
    output TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX test_results_run ON test_results(test_run_id);
CREATE INDEX test_results_case ON test_results(case_id, id);

CREATE TABLE test_coverage_files (
    id BIGSERIAL PRIMARY KEY,
    test_run_id BIGINT NOT NULL REFERENCES test_runs(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    lines_total BIGINT NOT NULL,
    lines_covered BIGINT NOT NULL,
    branches_total BIGINT NOT NULL,
    branches_covered BIGINT NOT NULL,
    line_hits TEXT NOT NULL
);
CREATE INDEX test_coverage_files_run ON test_coverage_files(test_run_id);

CREATE TABLE test_flaky (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    case_id BIGINT NOT NULL REFERENCES test_cases(id) ON DELETE CASCADE,
    score BIGINT NOT NULL,
    cause TEXT NOT NULL,
    example_run BIGINT NOT NULL,
    work_item TEXT,
    first_seen_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX test_flaky_case ON test_flaky(project_id, case_id);

CREATE TABLE test_quarantine (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    case_id BIGINT NOT NULL REFERENCES test_cases(id) ON DELETE CASCADE,
    reason TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    ended_at BIGINT
);
CREATE INDEX test_quarantine_case ON test_quarantine(project_id, case_id);
