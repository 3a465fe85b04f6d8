//! Response bodies: the proxy's own short answers, and a replica's body streamed through while
//! the request still counts as in flight.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::pool::{Pool, Sender};
use super::signals::{ERROR, ReplicaSignals};
use crate::upstream::InFlight;

/// A request counted in flight on a replica (the upstream's counter and the gauge).
pub(crate) struct Counted {
    guard: InFlight,
    signals: Arc<ReplicaSignals>,
    upgraded: bool,
}

impl Counted {
    pub fn new(guard: InFlight, signals: Arc<ReplicaSignals>) -> Counted {
        signals.in_flight.inc();
        Counted {
            guard,
            signals,
            upgraded: false,
        }
    }

    pub fn signals(&self) -> &ReplicaSignals {
        &self.signals
    }

    /// The request became an upgraded connection.
    pub fn upgrade(&mut self) {
        if !self.upgraded {
            self.upgraded = true;
            self.guard.upgrade();
            self.signals.in_flight.dec();
            self.signals.upgraded.inc();
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.upgraded {
            self.signals.upgraded.dec();
        } else {
            self.signals.in_flight.dec();
        }
    }
}

/// What happens when a replica's response ends.
pub(crate) struct Finish {
    pub counted: Counted,
    pub class: usize,
    pub latency_s: f64,
    /// The connection goes back to the pool only after a complete response.
    pub conn: Option<(Arc<Pool>, SocketAddr, Sender)>,
}

enum Kind {
    Local(Option<Bytes>),
    Upstream {
        inner: Incoming,
        finish: Option<Finish>,
    },
}

/// The body of every response the proxy sends.
pub struct ProxyBody {
    kind: Kind,
}

impl ProxyBody {
    pub(crate) fn local(text: String) -> ProxyBody {
        ProxyBody {
            kind: Kind::Local(Some(Bytes::from(text))),
        }
    }

    pub(crate) fn empty() -> ProxyBody {
        ProxyBody {
            kind: Kind::Local(None),
        }
    }

    pub(crate) fn upstream(inner: Incoming, finish: Finish) -> ProxyBody {
        ProxyBody {
            kind: Kind::Upstream {
                inner,
                finish: Some(finish),
            },
        }
    }
}

/// Records the request once: `complete` when the replica's body ended normally (the connection
/// is reusable), `failed` when the replica broke it off.
fn settle(finish: &mut Option<Finish>, complete: bool, failed: bool) {
    if let Some(f) = finish.take() {
        let class = if failed { ERROR } else { f.class };
        f.counted.signals.record(class, f.latency_s);
        if complete && let Some((pool, addr, sender)) = f.conn {
            pool.put(addr, sender);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream { inner, finish } => match Pin::new(&mut *inner).poll_frame(cx) {
                Poll::Ready(None) => {
                    settle(finish, true, false);
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Ok(frame))) => {
                    // hyper stops polling a body that says it ended: settle now.
                    if inner.is_end_stream() {
                        settle(finish, true, false);
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    settle(finish, false, true);
                    Poll::Ready(Some(Err(e)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Local(bytes) => bytes.is_none(),
            Kind::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Local(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Local(None) => SizeHint::with_exact(0),
            Kind::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Kind::Upstream { inner, finish } = &mut self.kind {
            // Ended without a final poll (empty bodies), or the client went away: the replica
            // answered, so its status class counts; only a complete body frees the connection.
            let complete = inner.is_end_stream();
            settle(finish, complete, false);
        }
    }
}
