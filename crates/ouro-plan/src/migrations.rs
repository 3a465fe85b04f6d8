//! Plan's own migrations (component `plan`), applied after the platform's, in this order.

use ouro_store::Migration;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "plan",
        version: 1,
        name: "items",
        sqlite: include_str!("../migrations/sqlite/0001_items.sql"),
        postgres: include_str!("../migrations/postgres/0001_items.sql"),
    },
    Migration {
        component: "plan",
        version: 2,
        name: "ranks",
        sqlite: include_str!("../migrations/sqlite/0002_ranks.sql"),
        postgres: include_str!("../migrations/postgres/0002_ranks.sql"),
    },
    Migration {
        component: "plan",
        version: 3,
        name: "links",
        sqlite: include_str!("../migrations/sqlite/0003_links.sql"),
        postgres: include_str!("../migrations/postgres/0003_links.sql"),
    },
    Migration {
        component: "plan",
        version: 4,
        name: "saved_queries",
        sqlite: include_str!("../migrations/sqlite/0004_saved_queries.sql"),
        postgres: include_str!("../migrations/postgres/0004_saved_queries.sql"),
    },
    Migration {
        component: "plan",
        version: 6,
        name: "sprints",
        sqlite: include_str!("../migrations/sqlite/0006_sprints.sql"),
        postgres: include_str!("../migrations/postgres/0006_sprints.sql"),
    },
    Migration {
        component: "plan",
        version: 8,
        name: "fields_attachments",
        sqlite: include_str!("../migrations/sqlite/0008_fields_attachments.sql"),
        postgres: include_str!("../migrations/postgres/0008_fields_attachments.sql"),
    },
    Migration {
        component: "plan",
        version: 9,
        name: "label_index",
        sqlite: include_str!("../migrations/sqlite/0009_label_index.sql"),
        postgres: include_str!("../migrations/postgres/0009_label_index.sql"),
    },
    Migration {
        component: "plan",
        version: 10,
        name: "rules",
        sqlite: include_str!("../migrations/sqlite/0010_rules.sql"),
        postgres: include_str!("../migrations/postgres/0010_rules.sql"),
    },
    Migration {
        component: "plan",
        version: 11,
        name: "notifications_intake",
        sqlite: include_str!("../migrations/sqlite/0011_notifications_intake.sql"),
        postgres: include_str!("../migrations/postgres/0011_notifications_intake.sql"),
    },
    Migration {
        component: "plan",
        version: 12,
        name: "state_index",
        sqlite: include_str!("../migrations/sqlite/0012_state_index.sql"),
        postgres: include_str!("../migrations/postgres/0012_state_index.sql"),
    },
];
