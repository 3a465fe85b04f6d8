-- Links between items of one project. `relates` is symmetric and stored once; the UNIQUE
-- constraint keeps a second identical link from being created by two racing requests.
CREATE TABLE item_links (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    from_item_id BIGINT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('blocks', 'relates', 'duplicates')),
    to_item_id BIGINT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    created_by BIGINT REFERENCES users(id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (from_item_id, kind, to_item_id)
);
CREATE INDEX item_links_to ON item_links(to_item_id);

-- Links from an item to something in the ledger (a commit, a change request, ...). The subject
-- is named, not referenced: it may belong to a phase whose tables Plan must not read.
CREATE TABLE item_subject_links (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id BIGINT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    title TEXT NOT NULL,
    url TEXT,
    source_event_seq BIGINT,
    created_at BIGINT NOT NULL,
    UNIQUE (item_id, subject_type, subject_id)
);
