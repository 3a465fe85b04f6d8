-- Push rules of a repository (docs/push-rules.md). Protected branches: the first row whose
-- pattern (a glob over the branch name, e.g. main or release/*) matches a pushed branch decides.
-- push_role: nobody | developer | maintainer (who may move the branch by a direct push).
CREATE TABLE code_protected_branches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_id BIGINT NOT NULL REFERENCES code_repos(id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    pattern TEXT NOT NULL,
    push_role TEXT NOT NULL,
    allow_force_push BOOLEAN NOT NULL DEFAULT FALSE,
    allow_deletion BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE UNIQUE INDEX code_protected_branches_pattern ON code_protected_branches(repo_id, pattern);
-- Per-repository push settings. Without a row (or with custom_protection false) the default
-- branch is protected by the built-in rule. disabled_secret_rules: rule ids, comma-separated.
-- max_push_bytes / max_file_bytes: NULL means the server-wide limit.
CREATE TABLE code_push_settings (
    repo_id BIGINT PRIMARY KEY REFERENCES code_repos(id) ON DELETE CASCADE,
    custom_protection BOOLEAN NOT NULL DEFAULT FALSE,
    disabled_secret_rules TEXT NOT NULL DEFAULT '',
    max_push_bytes BIGINT,
    max_file_bytes BIGINT,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
