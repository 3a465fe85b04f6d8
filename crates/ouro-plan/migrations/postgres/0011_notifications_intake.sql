-- In-app notifications, written by the plan-notifications consumer (docs/notifications.md).
-- One row per (user, event, kind): a redelivered event adds nothing.
CREATE TABLE plan_notifications (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    item_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    event_seq BIGINT NOT NULL,
    read_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX plan_notifications_once ON plan_notifications(user_id, event_seq, kind);
CREATE INDEX plan_notifications_user_read ON plan_notifications(user_id, read_at);

-- Intake settings per project (docs/intake.md): whether the public feedback form is open.
CREATE TABLE plan_intake (
    project_id BIGINT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    public_form BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at BIGINT NOT NULL
);

-- Items that went through triage, and what was decided.
CREATE TABLE plan_triage (
    item_id BIGINT PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
