-- Change requests (numbered per repository, never reused), their reviews, commit statuses
-- (posted by people and later by pipelines) and each repository's merge rules.
CREATE TABLE code_change_requests (
    id BIGSERIAL PRIMARY KEY,
    repo_id BIGINT NOT NULL REFERENCES code_repos(id) ON DELETE CASCADE,
    number BIGINT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    draft BOOLEAN NOT NULL DEFAULT FALSE,
    author_id BIGINT REFERENCES users(id) ON DELETE SET NULL,
    head_id TEXT NOT NULL,
    merge_commit TEXT,
    merged_by BIGINT REFERENCES users(id) ON DELETE SET NULL,
    merged_at BIGINT,
    closed_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX code_change_requests_number ON code_change_requests(repo_id, number);
CREATE INDEX code_change_requests_open ON code_change_requests(repo_id, state);

CREATE TABLE code_cr_reviews (
    id BIGSERIAL PRIMARY KEY,
    cr_id BIGINT NOT NULL REFERENCES code_change_requests(id) ON DELETE CASCADE,
    reviewer_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    verdict TEXT NOT NULL,
    body TEXT NOT NULL DEFAULT '',
    head_id TEXT NOT NULL,
    dismissed BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);
CREATE INDEX code_cr_reviews_cr ON code_cr_reviews(cr_id, id);

CREATE TABLE code_commit_statuses (
    id BIGSERIAL PRIMARY KEY,
    repo_id BIGINT NOT NULL REFERENCES code_repos(id) ON DELETE CASCADE,
    sha TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    url TEXT,
    description TEXT,
    creator_id BIGINT REFERENCES users(id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX code_commit_statuses_sha ON code_commit_statuses(repo_id, sha, name, id);

CREATE TABLE code_merge_rules (
    repo_id BIGINT PRIMARY KEY REFERENCES code_repos(id) ON DELETE CASCADE,
    merge_method TEXT NOT NULL,
    required_approvals BIGINT NOT NULL,
    required_checks TEXT NOT NULL,
    dismiss_stale_approvals BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL
);
