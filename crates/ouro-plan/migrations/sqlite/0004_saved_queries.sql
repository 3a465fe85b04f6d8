-- Saved item queries: owner_user_id is the user a personal query belongs to, NULL when the query
-- is shared with the whole project. A plain UNIQUE would let shared names repeat (NULLs are
-- distinct on both engines), so uniqueness is an expression index; user ids start at 1.
CREATE TABLE saved_queries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    owner_user_id BIGINT REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    query TEXT NOT NULL,
    position BIGINT NOT NULL,
    created_by BIGINT REFERENCES users(id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX saved_queries_name ON saved_queries(project_id, COALESCE(owner_user_id, 0), name);
