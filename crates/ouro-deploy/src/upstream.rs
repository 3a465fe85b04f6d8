//! The live state of one replica as the proxy and the supervisor share it: the supervisor's
//! probes set `ready`, the proxy counts `in_flight` and reads `ready` on every request. Plain
//! atomics, so neither side takes a lock on the request path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One replica's address and live flags.
#[derive(Debug)]
pub struct Upstream {
    /// `service/version/N`, stable for the replica's life (metrics label and log prefix).
    pub replica: String,
    pub service: String,
    pub version: String,
    pub addr: SocketAddr,
    ready: AtomicBool,
    in_flight: AtomicU64,
    /// Upgraded (WebSocket) connections currently open through the proxy.
    upgraded: AtomicU64,
    /// Bumped when a drain closes this replica's upgraded connections. A generation rather than a
    /// flag: a drained version that is switched back to gets new connections that must stay open.
    close_upgraded: tokio::sync::watch::Sender<u64>,
}

impl Upstream {
    pub fn new(service: &str, version: &str, index: u32, addr: SocketAddr) -> Arc<Self> {
        Arc::new(Upstream {
            replica: format!("{service}/{version}/{index}"),
            service: service.to_string(),
            version: version.to_string(),
            addr,
            ready: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            upgraded: AtomicU64::new(0),
            close_upgraded: tokio::sync::watch::Sender::new(0),
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn upgraded(&self) -> u64 {
        self.upgraded.load(Ordering::Acquire)
    }

    /// Asks every upgraded connection open now to close (the proxy's drain, after the grace).
    pub fn close_upgraded(&self) {
        self.close_upgraded
            .send_modify(|generation| *generation += 1);
    }

    /// Changes when [`Upstream::close_upgraded`] is called after this subscription.
    pub fn upgraded_close_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.close_upgraded.subscribe()
    }

    /// Counts a request until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            upstream: self.clone(),
            upgraded: false,
        }
    }
}

/// A request (or, after [`InFlight::upgrade`], an upgraded connection) in flight to an upstream.
#[derive(Debug)]
pub struct InFlight {
    upstream: Arc<Upstream>,
    upgraded: bool,
}

impl InFlight {
    /// The request became an upgraded connection: it stops counting as in flight and counts as
    /// upgraded until dropped.
    pub fn upgrade(&mut self) {
        if !self.upgraded {
            self.upgraded = true;
            self.upstream.upgraded.fetch_add(1, Ordering::AcqRel);
            self.upstream.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.upgraded {
            self.upstream.upgraded.fetch_sub(1, Ordering::AcqRel);
        } else {
            self.upstream.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
