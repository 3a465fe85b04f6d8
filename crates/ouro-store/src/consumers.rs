//! In-process event consumers: the subscription API phases (and webhooks) build on.
//!
//! A [`Consumer`] sees every ledger event once per success, in sequence order. [`run`] keeps the
//! consumer's position in `consumer_cursors`, so a restart resumes where it stopped. Delivery is
//! at-least-once: a handler that fails is retried (with backoff) on the same event and the cursor
//! does not move past it. The cursor is written at most once per [`RunOptions::save_every`]
//! while events flow (and always before waiting on a failure and at shutdown): one write per
//! event would cost every consumer a synced commit for each event appended, which on SQLite's
//! single writer doubles the latency of every write. A crash replays the events since the last
//! write, so handlers must be idempotent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ouro_core::{Event, OuroError};
use tokio::sync::watch;

use crate::events::{self, EventFilter, Visibility};
use crate::{PageReq, Store, StoreError};

/// A boxed future, so [`Consumer`] stays object safe without an extra dependency.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that reacts to ledger events.
pub trait Consumer: Send + Sync + 'static {
    /// A stable name: the key of the stored cursor. Renaming a consumer restarts it from seq 0.
    fn name(&self) -> &'static str;

    /// Handles one event. `Err` means "try this event again later"; the runner never skips it.
    fn handle<'a>(
        &'a self,
        store: &'a Store,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), OuroError>>;
}

/// Timing of [`run_with`]. The defaults suit production; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Events fetched per read.
    pub batch: i64,
    /// First wait after a failure; doubles on each further failure of the same event.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Look again this often even without a local commit (another process may have appended).
    pub poll: Duration,
    /// The longest a handled event waits before the cursor records it.
    pub save_every: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            batch: 100,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            poll: Duration::from_secs(2),
            save_every: Duration::from_secs(1),
        }
    }
}

/// Runs `consumer` until `shutdown` becomes true (or its sender goes away).
pub async fn run(store: Store, consumer: Arc<dyn Consumer>, shutdown: watch::Receiver<bool>) {
    run_with(store, consumer, shutdown, RunOptions::default()).await
}

/// [`run`] with explicit timing.
pub async fn run_with(
    store: Store,
    consumer: Arc<dyn Consumer>,
    mut shutdown: watch::Receiver<bool>,
    opts: RunOptions,
) {
    let name = consumer.name();
    let mut backoff = Backoff::new(opts);
    // Subscribe before the first read so a commit between the read and the wait is not missed.
    let mut seq_rx = store.subscribe_seq();
    let mut after = loop {
        match load_cursor(&store, name).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(consumer = name, error = %e, "cannot read the consumer cursor; retrying");
                if !backoff.wait(&mut shutdown).await {
                    return;
                }
            }
        }
    };
    backoff.reset();
    tracing::debug!(consumer = name, after, "event consumer started");
    store.record_progress(name, after);
    let mut cursor = Cursor {
        saved: after,
        saved_at: tokio::time::Instant::now(),
    };
    loop {
        if stopping(&shutdown) {
            cursor.flush(&store, name, after).await;
            return;
        }
        let _ = seq_rx.borrow_and_update();
        let page = match fetch(&store, after, opts.batch).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(consumer = name, error = %e, "cannot read events; retrying");
                if !backoff.wait(&mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        let more = page.next_cursor.is_some();
        for event in &page.items {
            // The same event until it succeeds: skipping one would silently lose it.
            loop {
                let outcome = tokio::select! {
                    r = consumer.handle(&store, event) => r,
                    _ = wait_shutdown(&mut shutdown) => {
                        cursor.flush(&store, name, after).await;
                        return;
                    }
                };
                match outcome {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(consumer = name, seq = event.seq, kind = %event.kind, error = %e,
                            retry_in_ms = backoff.next.as_millis() as u64, "event handler failed; retrying the same event");
                        // Record the progress before the failing event, so a restart starts there.
                        cursor.flush(&store, name, after).await;
                        if !backoff.wait(&mut shutdown).await {
                            return;
                        }
                    }
                }
            }
            backoff.reset();
            after = event.seq;
            store.record_progress(name, after);
        }
        if cursor.saved_at.elapsed() >= opts.save_every {
            cursor.flush(&store, name, after).await;
        }
        if more {
            continue;
        }
        // Idle: the cursor is written when `save_every` has passed since the last write, unless
        // new events arrive first (they are handled, and the write comes after them).
        let due = if cursor.saved < after {
            cursor.saved_at + opts.save_every
        } else {
            tokio::time::Instant::now() + opts.poll
        };
        tokio::select! {
            _ = tokio::time::sleep_until(due), if cursor.saved < after => {
                cursor.flush(&store, name, after).await;
                continue;
            }
            r = seq_rx.changed() => {
                // The store is gone only while shutting down; fall back to polling meanwhile.
                if r.is_err() {
                    tokio::time::sleep(opts.poll).await;
                }
            }
            _ = wait_shutdown(&mut shutdown) => {
                cursor.flush(&store, name, after).await;
                return;
            }
            _ = tokio::time::sleep(opts.poll) => {}
        }
    }
}

/// What the stored cursor says, and when it was written.
struct Cursor {
    saved: i64,
    saved_at: tokio::time::Instant,
}

impl Cursor {
    /// Stores `seq` if it is ahead of the stored cursor. A failed write is logged and left for
    /// the next flush: the events since the stored cursor replay after a crash, which handlers
    /// tolerate, and holding up the consumer would not make the write succeed sooner.
    async fn flush(&mut self, store: &Store, name: &str, seq: i64) {
        if seq <= self.saved {
            return;
        }
        match save_cursor(store, name, seq).await {
            Ok(()) => {
                self.saved = seq;
                self.saved_at = tokio::time::Instant::now();
            }
            Err(e) => {
                tracing::warn!(consumer = name, seq, error = %e, "cannot store the consumer cursor; will retry");
            }
        }
    }
}

fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Resolves when shutdown starts; a dropped sender counts as shutdown.
async fn wait_shutdown(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

async fn load_cursor(store: &Store, name: &str) -> Result<i64, StoreError> {
    events::cursor(&mut store.read().await?, name).await
}

async fn fetch(store: &Store, after: i64, batch: i64) -> Result<crate::Page<Event>, StoreError> {
    events::list(
        &mut store.read().await?,
        &Visibility::All,
        &EventFilter::default(),
        PageReq::new(after, Some(batch)),
    )
    .await
}

async fn save_cursor(store: &Store, name: &str, seq: i64) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    events::set_cursor(&mut tx, name, seq).await?;
    tx.commit().await
}

struct Backoff {
    next: Duration,
    opts: RunOptions,
}

impl Backoff {
    fn new(opts: RunOptions) -> Backoff {
        Backoff {
            next: opts.initial_backoff,
            opts,
        }
    }

    fn reset(&mut self) {
        self.next = self.opts.initial_backoff;
    }

    /// Sleeps the current delay and doubles it; false when shutdown started meanwhile.
    async fn wait(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let delay = self.next;
        self.next = (self.next * 2).min(self.opts.max_backoff);
        tokio::select! {
            _ = tokio::time::sleep(delay) => !stopping(shutdown),
            _ = wait_shutdown(shutdown) => false,
        }
    }
}
