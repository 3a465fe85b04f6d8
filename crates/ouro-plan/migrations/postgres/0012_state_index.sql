-- The query language compares states case-insensitively (`state:"in progress"`). This index
-- serves `state:` filters, and it is also what gives the planner statistics for LOWER(state):
-- without them PostgreSQL guessed 5 matching rows where there were thousands and chose a scan.
CREATE INDEX items_project_lower_state ON items (project_id, LOWER(state));
