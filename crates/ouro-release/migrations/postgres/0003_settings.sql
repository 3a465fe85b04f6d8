-- Per-project release settings (docs/releases.md, "Versions and release notes"): the 0.x version
-- rules, the version of the first release and the release notes template (NULL: the default
-- layout). A project without a row uses the defaults.
CREATE TABLE release_settings (
    project_id BIGINT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    zero_major_bumps_minor BOOLEAN NOT NULL,
    zero_minor_bumps_patch BOOLEAN NOT NULL,
    initial_version TEXT NOT NULL,
    notes_template TEXT,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
