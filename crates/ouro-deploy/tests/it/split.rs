//! The numbers canary analysis judges: windows of cumulative traffic counters.

use ouro_deploy::target::{LATENCY_BUCKETS_MS, TrafficStats};

fn stats(requests: u64, errors: u64, fast: u64, slow: u64) -> TrafficStats {
    let mut latency_buckets = vec![0; LATENCY_BUCKETS_MS.len() + 1];
    latency_buckets[1] = fast; // <= 2 ms
    latency_buckets[7] = slow; // <= 250 ms
    TrafficStats {
        requests,
        errors,
        latency_buckets,
    }
}

#[test]
fn a_window_is_the_difference_of_two_snapshots() {
    let before = stats(100, 1, 100, 0);
    let after = stats(300, 5, 298, 2);
    let w = after.since(&before);
    assert_eq!(w.requests, 200);
    assert_eq!(w.errors, 4);
    assert!((w.error_rate - 0.02).abs() < 1e-9);
    // 198 fast and 2 slow: the 99th percentile (198th request) is still fast.
    assert_eq!(w.p99_ms, Some(2.0));
    let worse = stats(300, 5, 290, 10);
    assert_eq!(worse.since(&before).p99_ms, Some(250.0));
}

#[test]
fn an_empty_window_has_no_percentile_and_no_error_rate() {
    let s = stats(10, 0, 10, 0);
    let w = s.since(&s);
    assert_eq!(w.requests, 0);
    assert_eq!(w.error_rate, 0.0);
    assert_eq!(w.p99_ms, None);
}
