//! Embedded, append-only migrations. Each component (the platform, later each phase crate) ships
//! its own ordered list with one script per backend. A released migration is never edited: the
//! checksum of every applied script is recorded and compared at each start.

use sha2::{Digest, Sha256};

use crate::StoreError;
use crate::db::{Backend, Pools, q, run_script};

/// One migration of one component, with its script for each backend.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub component: &'static str,
    pub version: i64,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

impl Migration {
    fn script(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::Sqlite => self.sqlite,
            Backend::Postgres => self.postgres,
        }
    }

    fn checksum(&self, backend: Backend) -> String {
        hex::encode(Sha256::digest(self.script(backend).as_bytes()))
    }
}

/// The platform's own migrations: identity, projects, the ledger, webhooks.
pub const PLATFORM_MIGRATIONS: &[Migration] = &[
    Migration {
        component: "platform",
        version: 1,
        name: "platform",
        sqlite: include_str!("../migrations/sqlite/0001_platform.sql"),
        postgres: include_str!("../migrations/postgres/0001_platform.sql"),
    },
    Migration {
        component: "platform",
        version: 2,
        name: "webhook_delivery",
        sqlite: include_str!("../migrations/sqlite/0002_webhook_delivery.sql"),
        postgres: include_str!("../migrations/postgres/0002_webhook_delivery.sql"),
    },
];

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS ouro_migrations (
    component TEXT NOT NULL,
    version BIGINT NOT NULL,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (component, version)
)";

/// Applies what is missing. Checks everything first, so a refused start changes nothing.
pub(crate) async fn apply(pools: &Pools, migrations: &[Migration]) -> Result<(), StoreError> {
    let backend = pools.backend();
    let mut tx = pools.begin().await?;
    if backend == Backend::Postgres {
        // Two servers starting at once must not both migrate.
        q("SELECT pg_advisory_xact_lock(7071) IS NULL AS locked")
            .fetch_all(&mut tx)
            .await?;
    }
    // Reading the table first keeps a newer database untouched: the CREATE below is a no-op there.
    q(CREATE_TABLE).execute(&mut tx).await?;
    let applied = q("SELECT component, version, name, checksum FROM ouro_migrations ORDER BY component, version")
        .fetch_all(&mut tx)
        .await?;
    for row in &applied {
        let (component, version) = (row.text("component")?, row.i64("version")?);
        let known = migrations
            .iter()
            .find(|m| m.component == component && m.version == version);
        match known {
            None => {
                let newest = migrations
                    .iter()
                    .filter(|m| m.component == component)
                    .map(|m| m.version)
                    .max()
                    .unwrap_or(0);
                return Err(StoreError::Migration(format!(
                    "the database schema is newer than this binary: it has migration {component} v{version} \
                     ({}) but this ouro knows {component} up to v{newest}. Nothing was changed. \
                     Run a newer ouro against this database, or point --database-url/--data-dir elsewhere.",
                    row.text("name")?
                )));
            }
            Some(m) if m.checksum(backend) != row.text("checksum")? => {
                return Err(StoreError::Migration(format!(
                    "migration {component} v{version} ({}) differs from the one applied to this database; \
                     released migrations must never be edited. Nothing was changed.",
                    m.name
                )));
            }
            Some(_) => {}
        }
    }
    for m in migrations {
        let done = applied.iter().any(|r| {
            r.text("component").is_ok_and(|c| c == m.component)
                && r.i64("version").is_ok_and(|v| v == m.version)
        });
        if done {
            continue;
        }
        tracing::info!(
            component = m.component,
            version = m.version,
            name = m.name,
            "applying migration"
        );
        run_script(&mut tx, m.script(backend)).await.map_err(|e| {
            StoreError::Migration(format!(
                "migration {} v{} failed: {e}",
                m.component, m.version
            ))
        })?;
        q("INSERT INTO ouro_migrations (component, version, name, checksum, applied_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(m.component)
            .bind(m.version)
            .bind(m.name)
            .bind(m.checksum(backend))
            .bind(ouro_core::time::now_ms())
            .execute(&mut tx)
            .await?;
    }
    match tx {
        crate::db::TxInner::Sqlite(t) => t.commit().await?,
        crate::db::TxInner::Postgres(t) => t.commit().await?,
    }
    Ok(())
}
