//! Test support shared by every crate's tests: a fresh, empty database on each backend.
//!
//! SQLite always runs. PostgreSQL runs when `OURO_TEST_DATABASE_URL` points at a server where the
//! user may create databases; each test gets its own database. With `CI=true`, a missing
//! PostgreSQL is a failure, not a skip.

use std::str::FromStr;

use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;

/// A backend a test runs against.
#[derive(Debug, Clone)]
pub enum TestDb {
    Sqlite,
    Postgres { admin_url: String },
}

impl TestDb {
    pub fn name(&self) -> &'static str {
        match self {
            TestDb::Sqlite => "sqlite",
            TestDb::Postgres { .. } => "postgres",
        }
    }

    /// A URL of a fresh empty database. For SQLite it lives in `dir`.
    pub async fn fresh_url(&self, dir: &std::path::Path) -> String {
        match self {
            TestDb::Sqlite => format!("sqlite://{}", dir.join("ouro.db").display()),
            TestDb::Postgres { admin_url } => {
                let suffix = crate::crypto::random_token("")
                    .to_lowercase()
                    .replace(['-', '_'], "");
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let name = format!("ouro_t_{now:x}_{}", &suffix[..16]);
                let opts = PgConnectOptions::from_str(admin_url)
                    .expect("OURO_TEST_DATABASE_URL is a valid PostgreSQL URL");
                let mut conn = opts
                    .connect()
                    .await
                    .expect("cannot connect to OURO_TEST_DATABASE_URL");
                drop_stale(&mut conn, now).await;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("cannot create a test database: the user needs CREATEDB");
                with_database(admin_url, &name)
            }
        }
    }
}

/// Test databases are never dropped by the test that made them (its pools may still be open
/// when it ends), so each test process drops, once, those older than a day: their creation
/// time is in their name. Older names (without it) and databases still in use are left; a
/// failed drop is not the test's concern.
async fn drop_stale(conn: &mut sqlx::PgConnection, now: u64) {
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SWEPT.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'ouro\\_t\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for (name,) in names {
        if stale(&name, now) {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name}"
            )))
            .execute(&mut *conn)
            .await;
        }
    }
}

/// Whether a test database named `ouro_t_<hex seconds>_<random>` was made more than a day
/// before `now`.
fn stale(name: &str, now: u64) -> bool {
    let Some(rest) = name.strip_prefix("ouro_t_") else {
        return false;
    };
    let Some((secs, random)) = rest.split_once('_') else {
        return false;
    };
    let valid = |s: &str, f: fn(char) -> bool| !s.is_empty() && s.chars().all(f);
    if !valid(random, |c| c.is_ascii_alphanumeric()) || !valid(secs, |c| c.is_ascii_hexdigit()) {
        return false;
    }
    u64::from_str_radix(secs, 16).is_ok_and(|t| t + 24 * 3600 < now)
}

/// A fresh store with the platform migrations applied. The temporary directory (the SQLite file)
/// lives as long as this value.
pub struct TestStore {
    pub store: crate::Store,
    pub url: String,
    _dir: tempfile::TempDir,
}

/// Opens a fresh, migrated store on `db`.
pub async fn open_store(db: &TestDb) -> TestStore {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = db.fresh_url(dir.path()).await;
    let store = crate::Store::open(&url, crate::PLATFORM_MIGRATIONS)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", db.name()));
    TestStore {
        store,
        url,
        _dir: dir,
    }
}

/// Replaces the database name in a PostgreSQL URL, keeping credentials, host and parameters.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let (scheme, rest) = base.split_once("://").expect("URL has a scheme");
    let authority = rest.split('/').next().unwrap_or("");
    let mut out = format!("{scheme}://{authority}/{db}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The backends to run on: SQLite, plus PostgreSQL when configured.
pub fn backends() -> Vec<TestDb> {
    let mut v = vec![TestDb::Sqlite];
    match std::env::var("OURO_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => v.push(TestDb::Postgres { admin_url: url }),
        _ => {
            if std::env::var("CI").is_ok_and(|c| c == "true") {
                panic!(
                    "CI=true but OURO_TEST_DATABASE_URL is not set: storage tests must run on PostgreSQL in CI"
                );
            }
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                eprintln!("\n*** OURO_TEST_DATABASE_URL is not set: SKIPPING the PostgreSQL half of the storage tests ***\n")
            });
        }
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_test_databases_older_than_a_day_are_stale() {
        let now = 0x6000_0000;
        let day = 24 * 3600;
        let name = |t: u64| format!("ouro_t_{t:x}_abc123");
        assert!(super::stale(&name(now - day - 1), now));
        assert!(!super::stale(&name(now - day + 60), now));
        assert!(!super::stale(&name(now), now));
        assert!(
            !super::stale("ouro_t_0dwc6oaitm00osvw6bxx", now),
            "old-style name"
        );
        assert!(!super::stale("ouro_pbench13", now));
        assert!(!super::stale("ouro_t_1_x; DROP", now));
    }

    #[test]
    fn swaps_database_names() {
        assert_eq!(
            super::with_database("postgres:///postgres?host=/run/pg", "x"),
            "postgres:///x?host=/run/pg"
        );
        assert_eq!(
            super::with_database("postgres://u:p@h:5432/db", "x"),
            "postgres://u:p@h:5432/x"
        );
    }
}
