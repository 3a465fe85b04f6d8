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

/// The newest events the consumers have read, oldest first: every committed event with
/// `lo < seq <= hi` (the last one's seq). Each consumer used to read each new event itself, so
/// one commit cost a query per consumer (ten on a server with every phase); now the first
/// consumer to ask reads it, under the lock, and the others find it here. Sound because the
/// ledger commits in sequence order (the ledger lock): once an event is visible, every event
/// before it is, so a read of "after hi" never leaves a hole behind.
#[derive(Default)]
pub(crate) struct Recent {
    lo: i64,
    events: std::collections::VecDeque<Event>,
    /// Whether the read that ended at `hi` reached the end of the ledger (at that moment).
    at_end: bool,
    started: bool,
}

/// Events kept for the consumers (about 1 KiB each).
const RECENT_CAP: usize = 512;

impl Recent {
    fn hi(&self) -> i64 {
        self.events.back().map_or(self.lo, |e| e.seq)
    }

    /// The cached events after `after`, when the cache covers it. `latest` is the newest seq
    /// committed in this process: a cache that ends before it is not at the end any more.
    fn serve(&self, after: i64, batch: i64, latest: i64) -> Option<crate::Page<Event>> {
        if !self.started || after < self.lo || after >= self.hi() {
            return None;
        }
        let start = self.events.partition_point(|e| e.seq <= after);
        let items: Vec<Event> = self
            .events
            .iter()
            .skip(start)
            .take(batch.max(1) as usize)
            .cloned()
            .collect();
        let at_end = self.at_end && self.hi() >= latest;
        let next_cursor = if start + items.len() < self.events.len() || !at_end {
            items.last().map(|e| e.seq.to_string())
        } else {
            None
        };
        Some(crate::Page { items, next_cursor })
    }

    /// Takes in a page read from the database after `after`.
    fn learn(&mut self, after: i64, page: &crate::Page<Event>) {
        if !self.started || after > self.hi() {
            // The first read, or a consumer ahead of the cache: start over from here.
            self.started = true;
            self.lo = after;
            self.events.clear();
        } else if after < self.hi() {
            // A consumer behind the cache: what it read is older; the cache stays as it is.
            return;
        }
        self.events.extend(page.items.iter().cloned());
        self.at_end = page.next_cursor.is_none();
        while self.events.len() > RECENT_CAP {
            if let Some(e) = self.events.pop_front() {
                self.lo = e.seq;
            }
        }
    }
}

/// The events after `after`: from the shared cache when it holds them, else from the database
/// (and the cache learns them).
async fn fetch(store: &Store, after: i64, batch: i64) -> Result<crate::Page<Event>, StoreError> {
    let mut recent = store.recent.lock().await;
    if let Some(page) = recent.serve(after, batch, store.latest_seq_hint()) {
        return Ok(page);
    }
    if recent.started && after < recent.lo {
        // Far behind (catching up after a restart): read without holding up the others.
        drop(recent);
        return read_events(store, after, batch).await;
    }
    // Others asking meanwhile wait for this read and then find its events in the cache.
    let page = read_events(store, after, batch).await?;
    recent.learn(after, &page);
    Ok(page)
}

async fn read_events(
    store: &Store,
    after: i64,
    batch: i64,
) -> Result<crate::Page<Event>, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Page;

    fn page(seqs: std::ops::RangeInclusive<i64>, more: bool) -> Page<Event> {
        let items: Vec<Event> = seqs
            .map(|seq| Event {
                seq,
                time: 0,
                project: None,
                project_id: None,
                actor: "test".into(),
                kind: "project.updated".into(),
                schema_version: 1,
                subject: ouro_core::events::Subject {
                    kind: "project".into(),
                    id: "1".into(),
                },
                payload: serde_json::Value::Null,
            })
            .collect();
        let next_cursor = more
            .then(|| items.last().map(|e| e.seq.to_string()))
            .flatten();
        Page { items, next_cursor }
    }

    fn seqs(p: &Page<Event>) -> Vec<i64> {
        p.items.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn the_shared_cache_serves_what_it_holds_and_says_when_to_read_on() {
        let mut r = Recent::default();
        assert!(r.serve(0, 10, 5).is_none(), "nothing read yet");
        r.learn(0, &page(1..=5, false));
        // Inside the cache: served, in batches.
        let p = r.serve(1, 2, 5).unwrap();
        assert_eq!(
            (seqs(&p), p.next_cursor.as_deref()),
            (vec![2, 3], Some("3"))
        );
        let p = r.serve(3, 10, 5).unwrap();
        assert_eq!((seqs(&p), p.next_cursor), (vec![4, 5], None));
        // A commit after the read: the cache's end is no longer the ledger's end, so a
        // consumer served up to it must come back (to the database) instead of waiting.
        let p = r.serve(3, 10, 6).unwrap();
        assert_eq!(
            (seqs(&p), p.next_cursor.as_deref()),
            (vec![4, 5], Some("5"))
        );
        assert!(
            r.serve(5, 10, 6).is_none(),
            "at the end of the cache: read on"
        );
        // A read that stopped at its batch limit is not the end either.
        r.learn(5, &page(6..=8, true));
        assert_eq!(r.serve(7, 10, 8).unwrap().next_cursor.as_deref(), Some("8"));
        // An older read (a consumer behind) changes nothing.
        r.learn(2, &page(3..=4, true));
        assert_eq!(
            seqs(&r.serve(0, 100, 8).unwrap()),
            (1..=8).collect::<Vec<_>>()
        );
        // Bounded: the oldest are dropped and no longer served.
        r.learn(8, &page(9..=(8 + RECENT_CAP as i64), false));
        assert_eq!(r.events.len(), RECENT_CAP);
        assert!(r.serve(0, 10, 1_000).is_none());
        assert!(r.serve(8, 10, 1_000).is_some());
        // A consumer ahead of the cache starts it over.
        r.learn(10_000, &page(10_001..=10_002, false));
        assert_eq!(
            seqs(&r.serve(10_000, 10, 10_002).unwrap()),
            [10_001, 10_002]
        );
        assert!(r.serve(8, 10, 10_002).is_none());
    }
}
