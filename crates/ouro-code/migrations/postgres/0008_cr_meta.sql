-- Change request labels (free-form names) and requested reviewers (project members).
CREATE TABLE code_cr_labels (
    cr_id BIGINT NOT NULL REFERENCES code_change_requests(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    PRIMARY KEY (cr_id, name)
);
CREATE INDEX code_cr_labels_name ON code_cr_labels(name, cr_id);

CREATE TABLE code_cr_reviewers (
    cr_id BIGINT NOT NULL REFERENCES code_change_requests(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    requested_by BIGINT REFERENCES users(id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (cr_id, user_id)
);
CREATE INDEX code_cr_reviewers_user ON code_cr_reviewers(user_id, cr_id);
