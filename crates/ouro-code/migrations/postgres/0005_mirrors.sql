-- Mirrors: repositories that follow an external URL, fetched on a schedule and on demand.
-- url_enc is the source URL sealed with the instance secret (it may hold credentials);
-- code_repos.source_url keeps the URL with any password masked.
CREATE TABLE code_mirrors (
    repo_id BIGINT PRIMARY KEY REFERENCES code_repos(id) ON DELETE CASCADE,
    url_enc TEXT NOT NULL,
    interval_secs BIGINT NOT NULL,
    next_sync_at BIGINT NOT NULL,
    last_synced_at BIGINT,
    last_status TEXT,
    last_error TEXT,
    last_duration_ms BIGINT
);
CREATE INDEX code_mirrors_due ON code_mirrors(next_sync_at);
