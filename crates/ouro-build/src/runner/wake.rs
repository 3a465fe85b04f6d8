//! Claim wake-ups: instead of polling the database, a claimer (the in-process runner's slots, the
//! HTTP long-poll of a remote runner) waits on a signal that is raised whenever a job may have
//! become claimable in this process: runs created (push, manual, schedule, rerun), a job finished
//! (its dependents and its concurrency slot), a job queued again (retry, lost runner), a run
//! cancelled (its concurrency slots freed).
//!
//! - [`claimable`] raises the signal (call it after the transaction committed).
//! - [`wait_for`] runs an attempt (a claim), and while it finds nothing waits for the signal, with
//!   a slow fallback poll ([`FALLBACK_POLL`]) for jobs made claimable by another process (a
//!   second server on the same PostgreSQL database).
//!
//! The signal is a generation counter (`tokio::sync::watch`): a claimer subscribes before its
//! first attempt, so a job made claimable between an empty attempt and the wait is never missed.
//! One wake costs each waiting claimer one claim query; the in-process runner has one claimer
//! however many slots it has (slots claim one after the other), so a wake never stampedes.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How often a waiting claimer looks anyway (jobs made claimable by another process).
pub const FALLBACK_POLL: Duration = Duration::from_secs(1);

static GENERATION: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// Signals that a job may have become claimable (after the commit that made it so).
pub fn claimable() {
    GENERATION.send_modify(|g| *g = g.wrapping_add(1));
}

/// How many times [`claimable`] was called in this process (for tests and metrics).
pub fn generation() -> u64 {
    *GENERATION.borrow()
}

/// Runs `attempt` until it gives `Some`, waiting for [`claimable`] between empty attempts (or
/// `fallback` at most). After `wait` it gives `None` without another attempt.
pub async fn wait_for<T, E, F, Fut>(
    wait: Duration,
    fallback: Duration,
    mut attempt: F,
) -> Result<Option<T>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let deadline = Instant::now() + wait;
    let mut rx = GENERATION.subscribe();
    rx.borrow_and_update();
    loop {
        if let Some(v) = attempt().await? {
            return Ok(Some(v));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let tick = fallback.min(deadline - now);
        tokio::select! {
            r = rx.changed() => {
                // The sender is a static: it never closes.
                debug_assert!(r.is_ok());
            }
            _ = tokio::time::sleep(tick) => {
                if Instant::now() >= deadline {
                    return Ok(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A signal raised while the claimer waits wakes it before its fallback poll and deadline
    /// (both an hour: without the wake the attempt would give `None` only after an hour).
    #[tokio::test]
    async fn a_signal_wakes_a_waiting_claimer() {
        let ready = Arc::new(AtomicUsize::new(0));
        let attempts = Arc::new(AtomicUsize::new(0));
        let (parked_tx, parked_rx) = tokio::sync::oneshot::channel::<()>();
        let mut parked_tx = Some(parked_tx);
        let (r, a) = (ready.clone(), attempts.clone());
        let hour = Duration::from_secs(3600);
        let waiter = tokio::spawn(async move {
            wait_for::<usize, (), _, _>(hour, hour, move || {
                let n = a.fetch_add(1, Ordering::SeqCst);
                let got = (r.load(Ordering::SeqCst) > 0).then_some(n);
                if got.is_none()
                    && let Some(tx) = parked_tx.take()
                {
                    let _ = tx.send(());
                }
                async move { Ok(got) }
            })
            .await
        });
        parked_rx.await.expect("first attempt ran");
        ready.store(1, Ordering::SeqCst);
        claimable();
        let got = waiter.await.expect("joined").expect("no error");
        assert!(got.is_some_and(|n| n >= 1), "woken and claimed: {got:?}");
        assert!(attempts.load(Ordering::SeqCst) >= 2);
    }

    /// Without a signal nothing is claimed and the wait ends with `None` at its deadline.
    #[tokio::test]
    async fn no_signal_no_claim_until_the_deadline() {
        let got = wait_for::<(), (), _, _>(
            Duration::from_millis(30),
            Duration::from_millis(10),
            || async { Ok(None) },
        )
        .await;
        assert_eq!(got, Ok(None));
    }
}
