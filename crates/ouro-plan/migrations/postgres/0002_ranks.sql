-- Backlog ranks are fractional (ouro_plan::rank): a move writes one row. Two concurrent moves
-- into the same gap would compute the same rank; this index makes that impossible to commit.
-- Existing ranks are zero-padded numbers, unique per project, so the index builds on old data.
-- COLLATE "C" makes ORDER BY rank bytewise, as on SQLite, whatever the database's locale.
ALTER TABLE items ALTER COLUMN rank TYPE TEXT COLLATE "C";
CREATE UNIQUE INDEX items_project_rank ON items(project_id, rank);
