-- Bulk ingestion: PostgreSQL drops the foreign keys of test_results for speed and keeps their
-- delete cascade with a trigger (see its 0003). SQLite checks foreign keys for almost nothing,
-- so its schema stays as it is; this migration only keeps the version numbers in step.
SELECT 1;
