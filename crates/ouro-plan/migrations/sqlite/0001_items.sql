-- Plan: work items, their types and workflows.

-- One row per project: the last item number handed out. Keys are never reused, even after a
-- delete, because numbers come from here and not from MAX(number).
CREATE TABLE plan_counters (
    project_id BIGINT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    last_number BIGINT NOT NULL
);

-- Workflows are named per project; item types point at one, so several types share a workflow.
CREATE TABLE workflow_states (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    workflow TEXT NOT NULL,
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    position BIGINT NOT NULL,
    UNIQUE (project_id, workflow, name)
);

CREATE TABLE workflow_transitions (
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    workflow TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    PRIMARY KEY (project_id, workflow, from_state, to_state)
);

CREATE TABLE item_types (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    workflow TEXT NOT NULL,
    position BIGINT NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    number BIGINT NOT NULL,
    key TEXT NOT NULL,
    type TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    state_category TEXT NOT NULL,
    assignee_id BIGINT REFERENCES users(id) ON DELETE SET NULL,
    reporter_id BIGINT REFERENCES users(id) ON DELETE SET NULL,
    priority TEXT NOT NULL DEFAULT 'none',
    estimate BIGINT,
    parent_id BIGINT REFERENCES items(id) ON DELETE SET NULL,
    epic_id BIGINT REFERENCES items(id) ON DELETE SET NULL,
    sprint_id BIGINT,
    due_at BIGINT,
    target_at BIGINT,
    rank TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (project_id, number),
    UNIQUE (project_id, key)
);
CREATE INDEX items_project_state ON items(project_id, state_category, state);
CREATE INDEX items_project_assignee ON items(project_id, assignee_id);
CREATE INDEX items_parent ON items(parent_id);
CREATE INDEX items_epic ON items(epic_id);

CREATE TABLE item_labels (
    item_id BIGINT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    PRIMARY KEY (item_id, label)
);
CREATE INDEX item_labels_label ON item_labels(label);

CREATE TABLE item_comments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id BIGINT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    author_id BIGINT REFERENCES users(id) ON DELETE SET NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX item_comments_item ON item_comments(item_id, id);

CREATE TABLE item_watchers (
    item_id BIGINT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (item_id, user_id)
);
CREATE INDEX item_watchers_user ON item_watchers(user_id);
