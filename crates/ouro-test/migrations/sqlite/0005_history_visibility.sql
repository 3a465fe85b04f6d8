-- PostgreSQL only (autovacuum settings for test_results' index-only scans); SQLite's covering
-- indexes need no vacuum. This migration keeps the version numbers in step.
SELECT 1;
