//! One upstream connection per HTTP/1 client connection, driven inside the client
//! connection's task: its hyper `Connection` future is polled together with the request (for
//! the response head) and then with the response body, instead of in a task of its own. That
//! saves the hand-off between two tasks per request (channel send, wake-ups, oneshot), which
//! is most of the proxy's CPU per request. Requests fall back to the shared pool when the
//! bound connection is busy or broken, or the table picks another replica.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Context;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, Connection, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::upstream::Upstream;

type Io = TokioIo<TcpStream>;

/// A connection to one replica, owned by one client connection.
pub(crate) struct Link {
    upstream: Arc<Upstream>,
    sender: SendRequest<Incoming>,
    /// `None` once the connection ended.
    conn: Option<Pin<Box<Connection<Io, Incoming>>>>,
    since: Instant,
}

/// Where a client connection keeps its link between requests (empty while a request uses it).
pub(crate) type Slot = Arc<Mutex<Option<Link>>>;

fn lock(slot: &Slot) -> std::sync::MutexGuard<'_, Option<Link>> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

impl Link {
    pub async fn connect(
        upstream: &Arc<Upstream>,
        connect_timeout: Duration,
        max_header_bytes: usize,
    ) -> std::io::Result<Link> {
        let addr: SocketAddr = upstream.addr;
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
        let (sender, conn) = Builder::new()
            .max_buf_size(max_header_bytes.max(8192))
            .max_header_size(max_header_bytes)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        Ok(Link {
            upstream: upstream.clone(),
            sender,
            conn: Some(Box::pin(conn)),
            since: Instant::now(),
        })
    }

    /// Drives the connection's I/O (reading the response, writing the request body).
    pub fn poll_conn(&mut self, cx: &mut Context<'_>) {
        if let Some(c) = self.conn.as_mut()
            && c.as_mut().poll(cx).is_ready()
        {
            self.conn = None;
        }
    }

    /// Sends `req`, driving the connection until the response head arrives. `Err(Some(req))`:
    /// the request never left the proxy (the connection was closed or broken before).
    pub async fn send(
        &mut self,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, Option<Request<Incoming>>> {
        let ready = std::future::poll_fn(|cx| {
            self.poll_conn(cx);
            self.sender.poll_ready(cx)
        })
        .await;
        if ready.is_err() {
            return Err(Some(req));
        }
        let mut sending = std::pin::pin!(self.sender.try_send_request(req));
        let conn = &mut self.conn;
        let res = std::future::poll_fn(|cx| {
            if let Some(c) = conn.as_mut()
                && c.as_mut().poll(cx).is_ready()
            {
                *conn = None;
            }
            sending.as_mut().poll(cx)
        })
        .await;
        res.map_err(|mut e| e.take_message())
    }
}

/// The client connection's link to `upstream` if it has one that can take a request now;
/// otherwise a link to another replica stays where it is (`None`), and a dead or stale one is
/// dropped.
pub(crate) fn take(
    slot: &Slot,
    upstream: &Arc<Upstream>,
    idle_timeout: Duration,
    routed: impl Fn(&Arc<Upstream>) -> bool,
) -> Take {
    let mut guard = lock(slot);
    match guard.as_ref() {
        None => Take::Empty,
        Some(l) if !Arc::ptr_eq(&l.upstream, upstream) => {
            if l.upstream.is_ready() && routed(&l.upstream) {
                Take::Other
            } else {
                // Its replica left the route (a switch) or is not ready: this client's
                // requests get a link to a replica they go to now.
                *guard = None;
                Take::Empty
            }
        }
        Some(l) if l.conn.is_none() || l.since.elapsed() >= idle_timeout => {
            // Past the idle timeout the replica may be closing it right now: a request written
            // there could not be retried, so a new link is made instead.
            *guard = None;
            Take::Empty
        }
        Some(_) => guard.take().map(Take::Link).unwrap_or(Take::Empty),
    }
}

pub(crate) enum Take {
    Link(Link),
    /// No link: the caller may make one.
    Empty,
    /// A link to another replica: this request goes through the pool.
    Other,
}

/// Puts a link whose exchange completed back for the next request.
pub(crate) fn put(slot: &Slot, mut link: Link) {
    if link.conn.is_some() {
        link.since = Instant::now();
        *lock(slot) = Some(link);
    }
}
