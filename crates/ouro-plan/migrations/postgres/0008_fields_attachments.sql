-- Custom fields per project and their values per item; attachment metadata (the bytes live in
-- the data directory, content-addressed by sha256).
CREATE TABLE plan_fields (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    type TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '[]',
    position BIGINT NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE plan_field_values (
    item_id BIGINT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    field_id BIGINT NOT NULL REFERENCES plan_fields(id) ON DELETE CASCADE,
    value TEXT NOT NULL,
    PRIMARY KEY (item_id, field_id)
);
CREATE INDEX plan_field_values_field ON plan_field_values(field_id);

CREATE TABLE plan_attachments (
    id BIGSERIAL PRIMARY KEY,
    item_id BIGINT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    uploader_id BIGINT REFERENCES users(id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX plan_attachments_item ON plan_attachments(item_id, id);
