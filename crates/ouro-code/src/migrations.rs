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
    // 0002 and 0004 are not used (numbers were reserved for parallel work).
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
    Migration {
        component: "code",
        version: 7,
        name: "cr_comments",
        sqlite: include_str!("../migrations/sqlite/0007_cr_comments.sql"),
        postgres: include_str!("../migrations/postgres/0007_cr_comments.sql"),
    },
    Migration {
        component: "code",
        version: 8,
        name: "cr_meta",
        sqlite: include_str!("../migrations/sqlite/0008_cr_meta.sql"),
        postgres: include_str!("../migrations/postgres/0008_cr_meta.sql"),
    },
    Migration {
        component: "code",
        version: 9,
        name: "branch_rules",
        sqlite: include_str!("../migrations/sqlite/0009_branch_rules.sql"),
        postgres: include_str!("../migrations/postgres/0009_branch_rules.sql"),
    },
];
