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
    // 0002 to 0004 belong to change requests, push rules and browsing.
    Migration {
        component: "code",
        version: 5,
        name: "mirrors",
        sqlite: include_str!("../migrations/sqlite/0005_mirrors.sql"),
        postgres: include_str!("../migrations/postgres/0005_mirrors.sql"),
    },
    Migration {
        component: "code",
        version: 6,
        name: "change_requests",
        sqlite: include_str!("../migrations/sqlite/0006_change_requests.sql"),
        postgres: include_str!("../migrations/postgres/0006_change_requests.sql"),
    },
];
