//! What one route sends traffic to, and how a request picks a replica from it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::header::HeaderName;

use super::signals::ReplicaSignals;
use crate::spec::Sticky;
use crate::upstream::Upstream;

/// How a request picks among the ready replicas of one side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Balance {
    #[default]
    RoundRobin,
    /// The ready replica with the fewest requests in flight (ties rotate).
    LeastInFlight,
}

/// The replicas a route sends traffic to: all to `stable`, or `canary.1` percent of clients to
/// `canary.0`.
#[derive(Clone, Debug)]
pub struct RouteTable {
    pub service: String,
    /// Replicas of one version.
    pub stable: Vec<Arc<Upstream>>,
    /// Replicas of the new version and the percent of clients (0..=100) they get.
    pub canary: Option<(Vec<Arc<Upstream>>, u8)>,
    /// Which part of a request decides its side (none: the client address).
    pub sticky: Option<Sticky>,
    pub balance: Balance,
}

/// A replica with its metric handles, resolved once when the route is set.
pub(crate) struct Backend {
    pub upstream: Arc<Upstream>,
    pub signals: Arc<ReplicaSignals>,
}

/// The replicas of one version and the rotation counter of its balancing.
pub(crate) struct Side {
    pub backends: Vec<Backend>,
    next: AtomicUsize,
}

impl Side {
    pub fn new(backends: Vec<Backend>) -> Side {
        Side {
            backends,
            next: AtomicUsize::new(0),
        }
    }

    /// A ready replica not in `tried` (upstream pointers), or none.
    pub fn pick(&self, balance: Balance, tried: &[usize]) -> Option<&Backend> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let usable = |b: &Backend| {
            b.upstream.is_ready() && !tried.contains(&(Arc::as_ptr(&b.upstream) as usize))
        };
        match balance {
            Balance::RoundRobin => (0..n)
                .map(|i| &self.backends[(start + i) % n])
                .find(|b| usable(b)),
            Balance::LeastInFlight => {
                let mut best: Option<&Backend> = None;
                for i in 0..n {
                    let b = &self.backends[(start + i) % n];
                    if usable(b)
                        && best.is_none_or(|x| b.upstream.in_flight() < x.upstream.in_flight())
                    {
                        best = Some(b);
                    }
                }
                best
            }
        }
    }
}

/// What decides a request's side, parsed once per route.
pub(crate) enum StickyKey {
    Cookie(String),
    Header(HeaderName),
}

impl StickyKey {
    pub fn from_spec(sticky: &Sticky) -> Option<StickyKey> {
        match sticky {
            Sticky::Cookie(name) => Some(StickyKey::Cookie(name.clone())),
            // A name that is no valid header name can match no request: the client address decides.
            Sticky::Header(name) => HeaderName::from_bytes(name.as_bytes())
                .ok()
                .map(StickyKey::Header),
        }
    }
}

/// A route as the request path uses it.
pub(crate) struct Table {
    pub service: String,
    pub stable: Side,
    pub canary: Option<(Side, u8)>,
    pub sticky: Option<StickyKey>,
    pub balance: Balance,
}

/// The bucket (0..100) of a client key. A client is on the canary side when its bucket is below
/// the weight, so the same client stays on its side while the weight holds and raising the weight
/// only moves clients from stable to canary.
pub(crate) fn bucket(key: &[u8]) -> u8 {
    // FNV-1a: stable across processes and Rust versions (clients keep their side over restarts).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // A final mix so keys differing only in their last characters spread over all buckets.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h % 100) as u8
}

/// The value of cookie `name` in a `Cookie` header value (`a=1; b=2`).
pub(crate) fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_spread_over_the_whole_range() {
        let mut counts = [0u32; 100];
        for i in 0..100_000 {
            counts[bucket(format!("user-{i}").as_bytes()) as usize] += 1;
        }
        // 1000 expected per bucket; a bad hash leaves buckets empty or doubles them.
        assert!(
            counts.iter().all(|&c| (700..1300).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn raising_the_weight_only_moves_clients_to_the_canary() {
        for i in 0..1000 {
            let key = format!("client-{i}");
            let b = bucket(key.as_bytes());
            let sides: Vec<bool> = (0..=100).map(|w| b < w).collect();
            // Once on the canary at some weight, on the canary at every higher weight.
            if let Some(first) = sides.iter().position(|&c| c) {
                assert!(sides[first..].iter().all(|&c| c), "{key}");
            }
            assert!(!sides[0] && sides[100]);
        }
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = "theme=dark; uid=42 ; uidx=7";
        assert_eq!(cookie_value(h, "uid"), Some("42"));
        assert_eq!(cookie_value(h, "uidx"), Some("7"));
        assert_eq!(cookie_value(h, "id"), None);
        assert_eq!(cookie_value("", "uid"), None);
    }

    fn side(n: u32) -> (Side, Vec<Arc<Upstream>>) {
        let families = super::super::signals::Families::new();
        let ups: Vec<Arc<Upstream>> = (0..n)
            .map(|i| {
                let u = Upstream::new("s", "v", i, ([127, 0, 0, 1], 1000 + i as u16).into());
                u.set_ready(true);
                u
            })
            .collect();
        let backends = ups
            .iter()
            .map(|u| Backend {
                upstream: u.clone(),
                signals: families.replica(u),
            })
            .collect();
        (Side::new(backends), ups)
    }

    #[test]
    fn round_robin_skips_unready_and_tried_replicas() {
        let (side, ups) = side(3);
        let picks: Vec<u32> = (0..6)
            .map(|_| {
                side.pick(Balance::RoundRobin, &[])
                    .map(|b| b.upstream.addr.port())
            })
            .map(|p| p.map_or(0, |p| u32::from(p) - 1000))
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        ups[1].set_ready(false);
        let tried = [Arc::as_ptr(&ups[0]) as usize];
        for _ in 0..4 {
            let b = side
                .pick(Balance::RoundRobin, &tried)
                .map(|b| b.upstream.addr.port());
            assert_eq!(b, Some(1002));
        }
        ups[2].set_ready(false);
        assert!(side.pick(Balance::RoundRobin, &tried).is_none());
    }

    #[test]
    fn least_in_flight_prefers_the_idle_replica() {
        let (side, ups) = side(3);
        let _a = ups[0].begin();
        let _b = ups[1].begin();
        let _c = ups[1].begin();
        for _ in 0..5 {
            let b = side
                .pick(Balance::LeastInFlight, &[])
                .map(|b| b.upstream.addr.port());
            assert_eq!(b, Some(1002));
        }
    }
}
