//! Deploy's own migrations (component `deploy`, tables prefixed `deploy_`), applied after Release's.

use ouro_store::Migration;

pub const MIGRATIONS: &[Migration] = &[Migration {
    component: "deploy",
    version: 1,
    name: "deployments",
    sqlite: include_str!("../migrations/sqlite/0001_deployments.sql"),
    postgres: include_str!("../migrations/postgres/0001_deployments.sql"),
}];
