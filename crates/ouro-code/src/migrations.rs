//! Code's own migrations (component `code`, tables prefixed `code_`), applied after Plan's.

use ouro_store::Migration;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "code",
        version: 1,
        name: "repos",
        sqlite: include_str!("../migrations/sqlite/0001_repos.sql"),
        postgres: include_str!("../migrations/postgres/0001_repos.sql"),
    },
    Migration {
        component: "code",
        version: 3,
        name: "push_rules",
        sqlite: include_str!("../migrations/sqlite/0003_push_rules.sql"),
        postgres: include_str!("../migrations/postgres/0003_push_rules.sql"),
    },
];
