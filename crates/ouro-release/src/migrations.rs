//! Release's own migrations (component `release`, tables prefixed `release_`), applied after Test's.

use ouro_store::Migration;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "release",
        version: 1,
        name: "releases",
        sqlite: include_str!("../migrations/sqlite/0001_releases.sql"),
        postgres: include_str!("../migrations/postgres/0001_releases.sql"),
    },
    Migration {
        component: "release",
        version: 2,
        name: "promotions",
        sqlite: include_str!("../migrations/sqlite/0002_promotions.sql"),
        postgres: include_str!("../migrations/postgres/0002_promotions.sql"),
    },
    Migration {
        component: "release",
        version: 3,
        name: "settings",
        sqlite: include_str!("../migrations/sqlite/0003_settings.sql"),
        postgres: include_str!("../migrations/postgres/0003_settings.sql"),
    },
    Migration {
        component: "release",
        version: 4,
        name: "deploy_state",
        sqlite: include_str!("../migrations/sqlite/0004_deploy_state.sql"),
        postgres: include_str!("../migrations/postgres/0004_deploy_state.sql"),
    },
];
