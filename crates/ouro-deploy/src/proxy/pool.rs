//! Keep-alive HTTP/1.1 connections to replicas. Our own small pool rather than hyper-util's
//! client: a failed connect must hand the request back untouched so it can go to another
//! replica, which needs the connect and the send as separate steps.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::lock;

pub(crate) type Sender = SendRequest<Incoming>;

struct Idle {
    sender: Sender,
    since: Instant,
}

pub(crate) struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    idle_timeout: Duration,
    max_idle: usize,
    connect_timeout: Duration,
    max_header_bytes: usize,
}

impl Pool {
    pub fn new(
        idle_timeout: Duration,
        max_idle: usize,
        connect_timeout: Duration,
        max_header_bytes: usize,
    ) -> Pool {
        Pool {
            idle: Mutex::new(HashMap::new()),
            idle_timeout,
            max_idle,
            connect_timeout,
            max_header_bytes,
        }
    }

    /// An idle connection to `addr` that can take a request now.
    pub fn take(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = lock(&self.idle);
        let list = idle.get_mut(&addr)?;
        // Most recently used first: it is the least likely to have been closed by the replica.
        while let Some(last) = list.last() {
            if last.since.elapsed() < self.idle_timeout && !last.sender.is_closed() {
                break;
            }
            list.pop();
        }
        // A connection put back before its task saw the end of the response is not ready yet;
        // it stays for a later request rather than being waited for here.
        let i = list.iter().rposition(|e| e.sender.is_ready())?;
        Some(list.swap_remove(i).sender)
    }

    /// Returns a connection whose last exchange finished. Kept even when its task has not yet
    /// noticed the end of the response (it becomes ready by itself), which saves a task per
    /// request that would only wait for that.
    pub fn put(&self, addr: SocketAddr, sender: Sender) {
        if !sender.is_closed() {
            self.keep(addr, sender);
        }
    }

    fn keep(&self, addr: SocketAddr, sender: Sender) {
        let mut idle = lock(&self.idle);
        let list = idle.entry(addr).or_default();
        if list.len() < self.max_idle {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// A new connection to `addr`; its task ends when the connection closes.
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<Sender> {
        let stream = connect(addr, self.connect_timeout).await?;
        let (sender, conn) = Builder::new()
            .max_buf_size(self.max_header_bytes.max(8192))
            .max_header_size(self.max_header_bytes)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            // Errors here reach the request as the response's error; nothing more to report.
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    /// Drops idle connections to replicas that are gone.
    pub fn forget(&self, addr: SocketAddr) {
        let mut idle = lock(&self.idle);
        idle.remove(&addr);
    }
}

/// A TCP connection to a replica, without delay for small writes.
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A plain keep-alive connection to a replica, for the fast path (no task of its own: it is
/// only read and written by the request using it).
pub(crate) struct Link {
    pub addr: SocketAddr,
    pub stream: TcpStream,
    /// When its last response ended.
    pub since: Instant,
}

impl Link {
    /// Young enough and, as far as the runtime knows, not closed by the replica. A replica's
    /// close makes the socket readable; reading then returns the end (or bytes nobody asked
    /// for), either way the link is done. The read is skipped when the runtime has seen no
    /// readiness since the last one, which is the usual case.
    pub fn reusable(&self, idle_timeout: Duration) -> bool {
        if self.since.elapsed() >= idle_timeout {
            return false;
        }
        let mut byte = [0u8; 1];
        matches!(self.stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// Idle [`Link`]s by replica address.
pub(crate) struct Links {
    idle: Mutex<IdleLinks>,
    idle_timeout: Duration,
    max_idle: usize,
}

struct IdleLinks {
    by_addr: HashMap<SocketAddr, Vec<Link>>,
    /// When the links past the idle timeout were last closed.
    swept: Instant,
}

impl IdleLinks {
    /// Takes out every link idle for `idle_timeout` or longer. Links are only looked at when a
    /// request takes one for their replica, so without this a link put back after its replica
    /// left the routes (a client connection's own link, returned at its next request) or one
    /// below a burst's worth of links would keep its socket open for good.
    fn sweep(&mut self, idle_timeout: Duration) -> Vec<Link> {
        let mut stale = Vec::new();
        for list in self.by_addr.values_mut() {
            let (old, fresh): (Vec<Link>, Vec<Link>) = std::mem::take(list)
                .into_iter()
                .partition(|l| l.since.elapsed() >= idle_timeout);
            *list = fresh;
            stale.extend(old);
        }
        self.by_addr.retain(|_, list| !list.is_empty());
        self.swept = Instant::now();
        stale
    }
}

impl Links {
    pub fn new(idle_timeout: Duration, max_idle: usize) -> Links {
        Links {
            idle: Mutex::new(IdleLinks {
                by_addr: HashMap::new(),
                swept: Instant::now(),
            }),
            idle_timeout,
            max_idle,
        }
    }

    /// The most recently used idle link to `addr` that is still usable.
    pub fn take(&self, addr: SocketAddr) -> Option<Link> {
        loop {
            let link = lock(&self.idle).by_addr.get_mut(&addr)?.pop()?;
            if link.reusable(self.idle_timeout) {
                return Some(link);
            }
        }
    }

    /// Keeps a link whose last response was read to its end; at most once per idle timeout,
    /// also closes the links idle for longer.
    pub fn put(&self, link: Link) {
        let stale = {
            let mut idle = lock(&self.idle);
            let list = idle.by_addr.entry(link.addr).or_default();
            if list.len() < self.max_idle {
                list.push(link);
            }
            if idle.swept.elapsed() >= self.idle_timeout {
                idle.sweep(self.idle_timeout)
            } else {
                Vec::new()
            }
        };
        // Their sockets close here, outside the lock.
        drop(stale);
    }

    pub fn forget(&self, addr: SocketAddr) {
        let gone = lock(&self.idle).by_addr.remove(&addr);
        drop(gone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A link to a new listener, and the listener's end of it.
    async fn link() -> (Link, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let (far, _) = listener.accept().await.unwrap();
        let link = Link {
            addr,
            stream,
            since: Instant::now(),
        };
        (link, far)
    }

    #[tokio::test]
    async fn a_link_nobody_takes_again_is_closed_after_the_idle_timeout() {
        let idle_timeout = Duration::from_millis(50);
        let links = Links::new(idle_timeout, 8);
        // As a client connection returns its own link to a replica that left the routes: put
        // back, and never asked for again.
        let (orphan, mut orphan_far) = link().await;
        links.put(orphan);
        tokio::time::sleep(idle_timeout * 2).await;
        // Any later put closes it.
        let (fresh, _fresh_far) = link().await;
        let fresh_addr = fresh.addr;
        links.put(fresh);
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), orphan_far.read(&mut byte))
            .await
            .expect("the orphaned link is still open");
        assert_eq!(read.unwrap(), 0);
        assert!(links.take(fresh_addr).is_some(), "the fresh link went too");
    }
}
