-- Bulk ingestion (bench/test-store.py: a 100k-case report). PostgreSQL checks a foreign key with
-- one locking query per inserted row; on test_results those two checks cost more than the
-- insert itself (about 1.3 s of 2.1 s for 100k rows). Results are written only by ingestion,
-- with the ids of the run and the cases it has just written or looked up in the same
-- transaction, so the checks are dropped here. The delete cascade they carried is kept by a
-- statement trigger: deleting test runs (a re-ingested attempt, or a deleted project through
-- test_runs' own cascade) deletes their results. SQLite checks foreign keys for almost nothing
-- and keeps them.
ALTER TABLE test_results DROP CONSTRAINT IF EXISTS test_results_test_run_id_fkey;
ALTER TABLE test_results DROP CONSTRAINT IF EXISTS test_results_case_id_fkey;

CREATE FUNCTION test_runs_delete_results() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM test_results WHERE test_run_id IN (SELECT id FROM deleted_runs);
    RETURN NULL;
END
$$;

CREATE TRIGGER test_runs_delete_results AFTER DELETE ON test_runs
    REFERENCING OLD TABLE AS deleted_runs
    FOR EACH STATEMENT EXECUTE FUNCTION test_runs_delete_results();
