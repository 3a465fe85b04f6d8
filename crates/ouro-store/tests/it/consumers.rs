//! The in-process consumer runner: order, retries without skipping, resume after restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ouro_core::events as ev;
use ouro_core::{Actor, Event, NewEvent, OuroError};
use ouro_store::Store;
use ouro_store::consumers::{self, BoxFuture, Consumer, RunOptions};
use ouro_store::testing::{backends, open_store};
use serde_json::json;
use tokio::sync::watch;

/// Records what it handled; fails the events listed in `failures` that many times first.
#[derive(Default)]
struct Recorder {
    /// The consumer's name (its cursor's key); "test-recorder" when unset.
    name: Option<&'static str>,
    handled: Mutex<Vec<i64>>,
    calls: Mutex<HashMap<i64, usize>>,
    failures: Mutex<HashMap<i64, usize>>,
}

impl Recorder {
    fn failing(seq: i64, times: usize) -> Recorder {
        let r = Recorder::default();
        r.failures.lock().unwrap().insert(seq, times);
        r
    }
    fn handled(&self) -> Vec<i64> {
        self.handled.lock().unwrap().clone()
    }
    fn calls(&self, seq: i64) -> usize {
        self.calls.lock().unwrap().get(&seq).copied().unwrap_or(0)
    }
}

impl Consumer for Recorder {
    fn name(&self) -> &'static str {
        self.name.unwrap_or("test-recorder")
    }

    fn handle<'a>(
        &'a self,
        _store: &'a Store,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), OuroError>> {
        Box::pin(async move {
            *self.calls.lock().unwrap().entry(event.seq).or_default() += 1;
            if let Some(left) = self.failures.lock().unwrap().get_mut(&event.seq)
                && *left > 0
            {
                *left -= 1;
                return Err(OuroError::internal());
            }
            self.handled.lock().unwrap().push(event.seq);
            Ok(())
        })
    }
}

const FAST: RunOptions = RunOptions {
    batch: 2,
    initial_backoff: Duration::from_millis(20),
    max_backoff: Duration::from_millis(80),
    poll: Duration::from_millis(200),
    save_every: Duration::from_millis(50),
};

async fn append(store: &Store, n: i64) {
    for i in 0..n {
        let mut tx = store.begin().await.unwrap();
        tx.append(
            NewEvent::new(
                ev::PROJECT_UPDATED,
                &Actor::System("test"),
                i,
                json!({"i": i}),
            )
            .in_project(1, "p"),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
}

struct Runner {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(store: &Store, consumer: Arc<Recorder>) -> Runner {
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(consumers::run_with(store.clone(), consumer, rx, FAST));
    Runner { stop, task }
}

impl Runner {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the runner stops on shutdown")
            .unwrap();
    }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn cursor_reaches(store: &Store, seq: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cursor(store).await != seq {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cursor did not reach {seq}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn cursor(store: &Store) -> i64 {
    ouro_store::events::cursor(&mut store.read().await.unwrap(), "test-recorder")
        .await
        .unwrap()
}

#[tokio::test]
async fn events_arrive_in_order_failures_are_retried_and_a_restart_resumes() {
    for db in backends() {
        let env = open_store(&db).await;
        let s = &env.store;
        append(s, 5).await;

        // Event 3 fails twice: it is retried, and 4 and 5 wait for it.
        let rec = Arc::new(Recorder::failing(3, 2));
        let runner = start(s, rec.clone());
        until("the backlog", || rec.handled().len() == 5).await;
        assert_eq!(rec.handled(), [1, 2, 3, 4, 5], "{}", db.name());
        assert_eq!(
            rec.calls(3),
            3,
            "{}: two failures then the success",
            db.name()
        );
        assert_eq!(rec.calls(4), 1);
        cursor_reaches(s, 5).await;

        // Live events wake the runner.
        append(s, 2).await;
        until("live events", || rec.handled().len() == 7).await;
        assert_eq!(rec.handled()[5..], [6, 7]);
        runner.stop().await;

        // Events appended while stopped are handled after a restart, and nothing before them again.
        append(s, 2).await;
        let rec2 = Arc::new(Recorder::default());
        let runner = start(s, rec2.clone());
        until("the events written while stopped", || {
            rec2.handled().len() == 2
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            rec2.handled(),
            [8, 9],
            "{}: resumes after the stored cursor",
            db.name()
        );
        cursor_reaches(s, 9).await;
        runner.stop().await;
    }
}

#[tokio::test]
async fn a_failing_event_holds_the_cursor_and_shutdown_still_stops_the_runner() {
    for db in backends() {
        let env = open_store(&db).await;
        let s = &env.store;
        append(s, 3).await;
        let rec = Arc::new(Recorder::failing(2, usize::MAX));
        let runner = start(s, rec.clone());
        until("several retries", || rec.calls(2) >= 3).await;
        assert_eq!(
            rec.handled(),
            [1],
            "{}: 3 is not handled before 2 succeeds",
            db.name()
        );
        assert_eq!(
            cursor(s).await,
            1,
            "{}: the cursor stays before the failing event",
            db.name()
        );
        runner.stop().await;

        // After a restart the failing event is tried again, not skipped.
        let rec2 = Arc::new(Recorder::default());
        let runner = start(s, rec2.clone());
        until("the held events", || rec2.handled().len() == 2).await;
        assert_eq!(rec2.handled(), [2, 3], "{}", db.name());
        runner.stop().await;
    }
}

#[tokio::test]
async fn the_cursor_is_written_once_per_interval_and_at_shutdown() {
    for db in backends() {
        let env = open_store(&db).await;
        let s = &env.store;
        append(s, 5).await;
        let rec = Arc::new(Recorder::default());
        let (stop, rx) = watch::channel(false);
        let slow = RunOptions {
            save_every: Duration::from_secs(3600),
            ..FAST
        };
        let runner = Runner {
            stop,
            task: tokio::spawn(consumers::run_with(s.clone(), rec.clone(), rx, slow)),
        };
        until("the backlog", || rec.handled().len() == 5).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            cursor(s).await,
            0,
            "{}: no cursor write per event within the interval",
            db.name()
        );
        runner.stop().await;
        assert_eq!(
            cursor(s).await,
            5,
            "{}: shutdown records the progress",
            db.name()
        );
    }
}

#[tokio::test]
async fn consumers_sharing_one_read_each_see_every_event_in_order_without_waiting_for_a_poll() {
    for db in backends() {
        let env = open_store(&db).await;
        let store = &env.store;
        // Polling once a minute: only the commit signal can wake a consumer within `until`.
        let opts = RunOptions {
            batch: 7,
            poll: Duration::from_secs(60),
            ..FAST
        };
        let mut runners = Vec::new();
        let mut seen = Vec::new();
        let mut spawn = |name: &'static str| {
            let s = Arc::new(Recorder {
                name: Some(name),
                ..Recorder::default()
            });
            let (stop, rx) = watch::channel(false);
            let task = tokio::spawn(consumers::run_with(store.clone(), s.clone(), rx, opts));
            runners.push(Runner { stop, task });
            seen.push(s);
        };
        for name in ["shared-a", "shared-b", "shared-c"] {
            spawn(name);
        }
        append(store, 40).await;
        // More events in one commit than the shared cache keeps.
        let mut tx = store.begin().await.unwrap();
        let burst: Vec<NewEvent> = (0..1_200)
            .map(|i| {
                NewEvent::new(
                    ev::PROJECT_UPDATED,
                    &Actor::System("test"),
                    i,
                    json!({"i": i}),
                )
                .in_project(1, "p")
            })
            .collect();
        tx.append_all(&burst).await.unwrap();
        tx.commit().await.unwrap();
        // One that starts from the beginning, far behind what the others share.
        spawn("shared-late");
        append(store, 5).await;

        let mut ledger = Vec::new();
        let mut after = 0;
        loop {
            let page = ouro_store::events::list(
                &mut store.read().await.unwrap(),
                &ouro_store::events::Visibility::All,
                &ouro_store::events::EventFilter::default(),
                ouro_store::PageReq::new(after, Some(500)),
            )
            .await
            .unwrap();
            ledger.extend(page.items.iter().map(|e| e.seq));
            match page.items.last() {
                Some(e) if page.next_cursor.is_some() => after = e.seq,
                _ => break,
            }
        }
        assert_eq!(ledger.len(), 1_245, "{}", db.name());
        for s in &seen {
            let name = s.name();
            until(name, || s.handled().len() >= ledger.len()).await;
            assert_eq!(s.handled(), ledger, "{} {name}", db.name());
        }
        for r in runners {
            r.stop().await;
        }
    }
}
