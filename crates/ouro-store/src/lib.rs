//! Ouro's storage. [`Store`] opens SQLite (the embedded default) or PostgreSQL, applies the
//! embedded migrations of every component, and hands out transactions in which each state change
//! appends its event to the ledger ([`Tx::append`]).

pub mod accounts;
pub mod consumers;
pub mod crypto;
pub mod db;
pub mod events;
pub mod migrate;
pub mod page;
pub mod projects;
#[cfg(feature = "testing")]
pub mod testing;
pub mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ouro_core::{ErrorCode, Event, NewEvent, OuroError};
use tokio::sync::watch;

pub use db::{
    Backend, Conn, Executor, Placeholders, PoolStats, Row, batch_sizes, insert_rows, q, redact_url,
};
pub use migrate::{Migration, PLATFORM_MIGRATIONS};
pub use page::{Page, PageReq};

/// Errors of the storage layer. They convert into [`OuroError`] (500 unless mapped by the caller).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Migration(String),
    #[error("cannot decode a row: {0}")]
    Decode(String),
    #[error(transparent)]
    Domain(#[from] OuroError),
}

impl StoreError {
    /// True when the database refused a row because a UNIQUE constraint already holds its key.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => {
                e.kind() == sqlx::error::ErrorKind::UniqueViolation
            }
            _ => false,
        }
    }
}

impl From<StoreError> for OuroError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Domain(e) => e,
            other => {
                tracing::error!(error = %other, "store error");
                if matches!(
                    &other,
                    StoreError::Db(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
                ) {
                    OuroError::new(
                        ErrorCode::Unavailable,
                        "the database is not reachable; retry later",
                    )
                } else {
                    OuroError::internal()
                }
            }
        }
    }
}

/// Maps a unique violation to a domain error, passing every other error through.
pub fn on_unique<T>(
    r: Result<T, StoreError>,
    e: impl FnOnce() -> OuroError,
) -> Result<T, StoreError> {
    match r {
        Err(err) if err.is_unique_violation() => Err(StoreError::Domain(e())),
        other => other,
    }
}

/// The store: connection pools plus the ledger's "newest sequence number" signal.
#[derive(Clone)]
pub struct Store {
    pools: db::Pools,
    seq: Arc<watch::Sender<i64>>,
    appended: Arc<AtomicU64>,
    /// The last event each in-process consumer has handled (ahead of its stored cursor).
    progress: Arc<std::sync::Mutex<std::collections::BTreeMap<&'static str, i64>>>,
    /// The newest events, read once for all in-process consumers.
    pub(crate) recent: Arc<tokio::sync::Mutex<consumers::Recent>>,
}

impl Store {
    /// Opens the database at `url` (`sqlite://PATH` or `postgres://...`) and applies `migrations`.
    /// Fails, changing nothing, when the database holds migrations this binary does not know.
    pub async fn open(url: &str, migrations: &[Migration]) -> Result<Store, StoreError> {
        let pools = db::Pools::connect(url).await?;
        migrate::apply(&pools, migrations).await?;
        pools.optimize().await?;
        let store = Store {
            pools,
            seq: Arc::new(watch::channel(0).0),
            appended: Arc::new(AtomicU64::new(0)),
            progress: Arc::default(),
            recent: Arc::default(),
        };
        let latest = events::latest_seq(&mut store.read().await?).await?;
        store.seq.send_replace(latest);
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.pools.backend()
    }

    /// Refreshes SQLite's planner statistics where they are out of date (what the store does
    /// by itself every 10,000 appended events); read connections planning with older ones are
    /// replaced. A no-op on PostgreSQL, whose autovacuum keeps its own.
    pub async fn refresh_statistics(&self) -> Result<(), StoreError> {
        self.pools.optimize().await
    }

    /// Begins a write transaction. Drop without [`Tx::commit`] to roll back.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(Tx {
            inner: self.pools.begin().await?,
            last_seq: None,
            appended: 0,
            locked: false,
            seq: self.seq.clone(),
            counter: self.appended.clone(),
            pools: self.pools.clone(),
        })
    }

    /// Begins a write transaction and runs `stmt` first, with `$1` = `id` (its only parameter),
    /// such as the row lock a writer takes before it reads. On PostgreSQL the BEGIN and `stmt`
    /// travel together: one round trip instead of two.
    pub async fn begin_then(&self, stmt: &'static str, id: i64) -> Result<Tx, StoreError> {
        Ok(Tx {
            inner: self.pools.begin_then(stmt, id).await?,
            last_seq: None,
            appended: 0,
            locked: false,
            seq: self.seq.clone(),
            counter: self.appended.clone(),
            pools: self.pools.clone(),
        })
    }

    /// A connection for reads.
    pub async fn read(&self) -> Result<Conn, StoreError> {
        self.pools.read().await
    }

    /// Receives the newest committed event sequence number after each commit that appended events.
    pub fn subscribe_seq(&self) -> watch::Receiver<i64> {
        self.seq.subscribe()
    }

    /// Wakes subscribers to look again (events written by another process show up this way too).
    pub fn latest_seq_hint(&self) -> i64 {
        *self.seq.borrow()
    }

    /// Events this process appended since it started (for `/metrics`).
    pub fn events_appended(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    /// Records that consumer `name` has handled every event up to `seq`.
    pub fn record_progress(&self, name: &'static str, seq: i64) {
        if let Ok(mut p) = self.progress.lock() {
            p.insert(name, seq);
        }
    }

    /// Per running consumer: how many committed events it has not handled yet (for `/metrics`;
    /// a backlog here is work the server still does in the background).
    pub fn consumer_lag(&self) -> Vec<(&'static str, i64)> {
        let latest = self.latest_seq_hint();
        match self.progress.lock() {
            Ok(p) => p.iter().map(|(n, s)| (*n, (latest - s).max(0))).collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn pool_stats(&self) -> PoolStats {
        self.pools.stats()
    }

    /// Checks the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        q("SELECT 1 AS one")
            .fetch_one(&mut self.read().await?)
            .await
            .map(|_| ())
    }

    pub async fn close(&self) {
        self.pools.close().await
    }
}

/// A write transaction. State changes and their events commit together or not at all.
pub struct Tx {
    inner: db::TxInner,
    last_seq: Option<i64>,
    appended: u64,
    locked: bool,
    seq: Arc<watch::Sender<i64>>,
    counter: Arc<AtomicU64>,
    pools: db::Pools,
}

/// After this many appended events (a proxy for rows written) the planner statistics are
/// refreshed in the background, so a database that grew from empty plans like an analyzed one.
const OPTIMIZE_EVERY_EVENTS: u64 = 10_000;

impl Executor for Tx {
    fn raw(&mut self) -> db::RawConn<'_> {
        self.inner.raw()
    }
}

impl Tx {
    async fn lock_ledger(&mut self) -> Result<(), StoreError> {
        if !self.locked {
            // PostgreSQL hands out sequence values before commit, so two writers could commit
            // seq 11 before seq 10 and a reader at 11 would never see 10. One transaction-scoped
            // lock makes commit order equal seq order. SQLite already has a single writer.
            if let db::TxInner::Postgres(_) = self.inner {
                q("SELECT pg_advisory_xact_lock(7070) IS NULL AS locked")
                    .fetch_all(self)
                    .await?;
            }
            self.locked = true;
        }
        Ok(())
    }

    /// Appends an event to the ledger in this transaction and returns its sequence number.
    pub async fn append(&mut self, ev: NewEvent) -> Result<i64, StoreError> {
        // On PostgreSQL the first append takes the ledger lock in its own INSERT.
        let take_lock = !self.locked && matches!(self.inner, db::TxInner::Postgres(_));
        self.locked = true;
        let seq = events::insert(self, &ev, take_lock).await?;
        self.last_seq = Some(seq);
        self.appended += 1;
        Ok(seq)
    }

    /// Runs `write` (an INSERT, UPDATE or DELETE without RETURNING, placeholders `$1` to `$n` in
    /// bind order) and appends `ev`, returning the event's sequence number. On PostgreSQL both
    /// are one statement (the write as a data-modifying WITH), so a change and its event cost one
    /// round trip; SQLite runs them one after the other.
    pub async fn append_after(&mut self, write: db::Q, ev: NewEvent) -> Result<i64, StoreError> {
        if !matches!(self.inner, db::TxInner::Postgres(_)) {
            write.execute(self).await?;
            return self.append(ev).await;
        }
        let take_lock = !self.locked;
        self.locked = true;
        let seq = events::insert_after(self, write, &ev, take_lock).await?;
        self.last_seq = Some(seq);
        self.appended += 1;
        Ok(seq)
    }

    /// Appends several events in this transaction with few statements (multi-row INSERTs), in
    /// order; for writers that record thousands at once (a test report's newly flaky tests).
    /// Returns the last sequence number, `None` when `evs` is empty.
    pub async fn append_all(&mut self, evs: &[NewEvent]) -> Result<Option<i64>, StoreError> {
        if evs.is_empty() {
            return Ok(None);
        }
        self.lock_ledger().await?;
        let last = events::insert_all(self, evs).await?;
        if last.is_some() {
            self.last_seq = last;
        }
        self.appended += evs.len() as u64;
        Ok(last)
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self.inner {
            db::TxInner::Sqlite(t) => t.commit().await?,
            db::TxInner::Postgres(t) => t.commit().await?,
        }
        let before = self.counter.fetch_add(self.appended, Ordering::Relaxed);
        if before / OPTIMIZE_EVERY_EVENTS != (before + self.appended) / OPTIMIZE_EVERY_EVENTS {
            let pools = self.pools.clone();
            tokio::spawn(async move {
                if let Err(e) = pools.optimize().await {
                    tracing::warn!(error = %e, "refreshing planner statistics failed");
                }
            });
        }
        if let Some(seq) = self.last_seq {
            self.seq.send_if_modified(|cur| {
                if seq > *cur {
                    *cur = seq;
                    true
                } else {
                    false
                }
            });
        }
        Ok(())
    }
}

/// Re-exported for phase crates that only need the event type.
pub type StoredEvent = Event;
