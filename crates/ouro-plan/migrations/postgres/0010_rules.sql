-- Automation rules: when an event of a kind arrives (and its conditions hold for an item), run
-- the actions on that item. `when_json` and `then_json` hold the rule's JSON (docs/automation.md).
CREATE TABLE plan_rules (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    event_kind TEXT NOT NULL,
    when_json TEXT NOT NULL,
    then_json TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX plan_rules_project_kind ON plan_rules(project_id, event_kind);

-- Marks projects whose default rules were created, so a deleted default stays deleted.
CREATE TABLE plan_rule_seeds (
    project_id BIGINT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE
);

-- One row per rule and item an event touched: what happened and why.
CREATE TABLE plan_rule_runs (
    id BIGSERIAL PRIMARY KEY,
    rule_id BIGINT NOT NULL REFERENCES plan_rules(id) ON DELETE CASCADE,
    event_seq BIGINT NOT NULL,
    event_kind TEXT NOT NULL,
    item_key TEXT NOT NULL,
    outcome TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX plan_rule_runs_rule ON plan_rule_runs(rule_id, id);
