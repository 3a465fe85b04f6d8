-- Sprints (time boxes of committed items) and per-column board settings.
-- items.sprint_id (migration 0001) points here; it is cleared when a sprint is removed.
CREATE TABLE plan_sprints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    goal TEXT NOT NULL DEFAULT '',
    capacity BIGINT,
    start_at BIGINT,
    end_at BIGINT,
    state TEXT NOT NULL DEFAULT 'planned',
    started_at BIGINT,
    completed_at BIGINT,
    committed_points BIGINT,
    completed_points BIGINT,
    version BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- Names are unique per project regardless of case, as `sprint:NAME` queries compare them.
CREATE UNIQUE INDEX plan_sprints_name ON plan_sprints(project_id, LOWER(name));
-- At most one active sprint per project, enforced by the database as well as the domain.
CREATE UNIQUE INDEX plan_sprints_one_active ON plan_sprints(project_id) WHERE state = 'active';
CREATE INDEX items_sprint ON items(sprint_id);

-- Work-in-progress limits per board column (a workflow state name).
CREATE TABLE plan_board_columns (
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    wip_limit BIGINT,
    PRIMARY KEY (project_id, state)
);
