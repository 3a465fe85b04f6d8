-- A test's history is an index-only scan of test_results_case_history (0004) only on pages that
-- vacuum has marked all-visible; elsewhere PostgreSQL visits the table row by row (about 6,000
-- heap pages for a 10,000-result history right after a bulk load: p99 59 ms instead of about
-- 25 ms, bench/test-store.py). By default autovacuum runs after inserts only once they reach 20 %
-- of the table, so the newest results (the ones a history reads first) stay unvisited the
-- longest. Vacuum after 1 % instead; the table is append-mostly, so each run is cheap.
ALTER TABLE test_results SET (autovacuum_vacuum_insert_scale_factor = 0.01);
