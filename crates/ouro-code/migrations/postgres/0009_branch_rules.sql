-- Merge rules per target-branch pattern (docs/change-requests.md, "Rules per target branch").
-- A change request uses the most specific pattern matching its target branch (an exact name
-- beats a glob; a longer literal prefix beats a shorter one); without a match the repository's
-- default in code_merge_rules applies. rules: the rule set as JSON (the MergeRules object of the
-- API), so fields added to MergeRules later need no column here.
CREATE TABLE code_branch_merge_rules (
    id BIGSERIAL PRIMARY KEY,
    repo_id BIGINT NOT NULL REFERENCES code_repos(id) ON DELETE CASCADE,
    pattern TEXT NOT NULL,
    rules TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX code_branch_merge_rules_pattern ON code_branch_merge_rules(repo_id, pattern);
-- Protected tags (docs/push-rules.md): a tag whose name matches a pattern (e.g. v*) can be
-- created by maintainers and owners only, and never moved or deleted by a push.
CREATE TABLE code_protected_tags (
    id BIGSERIAL PRIMARY KEY,
    repo_id BIGINT NOT NULL REFERENCES code_repos(id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    pattern TEXT NOT NULL
);
CREATE UNIQUE INDEX code_protected_tags_pattern ON code_protected_tags(repo_id, pattern);
