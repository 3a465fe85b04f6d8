-- Comments on change requests. Every comment belongs to a thread; a thread is either about the
-- whole change request (no anchor) or anchored on a diff line: path, side (old | new), line and
-- the head commit it was made on, with the line's text then (to tell when it is outdated).
CREATE TABLE code_cr_threads (
    id BIGSERIAL PRIMARY KEY,
    cr_id BIGINT NOT NULL REFERENCES code_change_requests(id) ON DELETE CASCADE,
    path TEXT,
    side TEXT,
    line BIGINT,
    commit_id TEXT,
    line_text TEXT,
    resolved BOOLEAN NOT NULL DEFAULT FALSE,
    resolved_by BIGINT REFERENCES users(id) ON DELETE SET NULL,
    resolved_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX code_cr_threads_cr ON code_cr_threads(cr_id, id);

CREATE TABLE code_cr_comments (
    id BIGSERIAL PRIMARY KEY,
    thread_id BIGINT NOT NULL REFERENCES code_cr_threads(id) ON DELETE CASCADE,
    cr_id BIGINT NOT NULL REFERENCES code_change_requests(id) ON DELETE CASCADE,
    author_id BIGINT REFERENCES users(id) ON DELETE SET NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    edited_at BIGINT
);
CREATE INDEX code_cr_comments_thread ON code_cr_comments(thread_id, id);
CREATE INDEX code_cr_comments_cr ON code_cr_comments(cr_id, id);

-- The merge gate can require every thread to be resolved.
ALTER TABLE code_merge_rules ADD COLUMN require_resolved_threads BOOLEAN NOT NULL DEFAULT FALSE;
