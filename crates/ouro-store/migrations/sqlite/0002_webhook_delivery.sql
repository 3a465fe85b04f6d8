-- A webhook receives only events appended after it was created: the ledger position at creation.
ALTER TABLE webhooks ADD COLUMN since_seq BIGINT NOT NULL DEFAULT 0;

-- The event consumer is at-least-once: enqueuing the same event twice for a webhook must be a
-- no-op. Manual redeliveries (redelivery_of set) are extra rows on purpose.
CREATE UNIQUE INDEX webhook_deliveries_once ON webhook_deliveries(webhook_id, event_seq) WHERE redelivery_of IS NULL;
