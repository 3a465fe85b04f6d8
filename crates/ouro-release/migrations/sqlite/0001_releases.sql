-- Releases: one row per version of a project. Draft rows may change; published rows are immutable
-- (only the withdrawn_* columns may be set later). Artifacts are copied by content hash from the
-- pipeline run the release was made from, so build artifact expiry cannot take them away.
CREATE TABLE release_releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    repo_id BIGINT NOT NULL,
    version TEXT NOT NULL,
    tag TEXT NOT NULL,
    sha TEXT NOT NULL,
    state TEXT NOT NULL,
    build_run_id BIGINT,
    notes TEXT NOT NULL,
    test_summary TEXT,
    created_by BIGINT,
    created_at BIGINT NOT NULL,
    published_by BIGINT,
    published_at BIGINT,
    withdrawn_by BIGINT,
    withdrawn_at BIGINT,
    withdrawn_reason TEXT,
    bundle_sha256 TEXT,
    bundle_size BIGINT,
    -- The pipeline run's number (build_run_id is its id), the previous release's version the
    -- commits were counted from, the SemVer bump and why, and the optimistic-concurrency revision.
    run_number BIGINT,
    previous_version TEXT,
    bump TEXT,
    reason TEXT,
    revision BIGINT NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX release_releases_version ON release_releases(project_id, version);
CREATE INDEX release_releases_repo ON release_releases(repo_id, created_at);

CREATE TABLE release_artifacts (
    release_id BIGINT NOT NULL REFERENCES release_releases(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (release_id, path)
);
CREATE INDEX release_artifacts_sha ON release_artifacts(sha256);

-- The work items and change requests a release links (from its commits): kind `item` (ref = the
-- item key) or `cr` (ref = the change request number), with the title when it was created.
CREATE TABLE release_links (
    release_id BIGINT NOT NULL REFERENCES release_releases(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    title TEXT NOT NULL,
    PRIMARY KEY (release_id, kind, ref)
);
