-- A test's history reads its results newest first (results::case_history). Results are written
-- run by run, so one test's rows lie one page apart; this index carries the columns the history
-- shows so that PostgreSQL can answer it with an index-only scan (pages marked all-visible by
-- vacuum; autovacuum runs on inserts). Only the messages of failures are read from the table.
-- It replaces test_results_case, whose key (case_id, id) it starts with.
CREATE INDEX test_results_case_history ON test_results(case_id, id)
    INCLUDE (test_run_id, outcome, attempts, flaky, duration_ms, created_at);
DROP INDEX test_results_case;
