-- A test's history reads its results newest first (results::case_history). Results are written
-- run by run, so one test's rows lie one page apart and the whole history of a test with 10,000
-- results read 10,000 table pages (bench/test-store.py: p99 251 ms). This index carries the
-- columns the history shows, so the history reads consecutive index pages instead; only the
-- messages of failures are read from the table. It replaces test_results_case, whose key
-- (case_id, id) it starts with.
CREATE INDEX test_results_case_history ON test_results(case_id, id, test_run_id, outcome, attempts, flaky, duration_ms, created_at);
DROP INDEX test_results_case;
