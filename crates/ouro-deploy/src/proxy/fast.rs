//! The HTTP/1.1 fast path. A client connection's plain requests (HTTP/1.1, origin-form, no
//! body, no upgrade, no `Expect`) are proxied by the connection's own task over a [`Link`]: the
//! heads are parsed with `httparse`, the request head is written in one write, and the
//! response is copied as it comes (its framing read, not rewritten: a chunked body passes
//! through chunked).
//!
//! Why: through hyper's client every request goes to the upstream connection's task through a
//! channel and comes back through a oneshot, and on one core that hand-off was most of the
//! proxy's user time per request (docs/benchmarks.md, "Proxy").
//!
//! Anything else (HTTP/2, HTTP/1.0, request bodies, upgrades, heads that do not parse or are
//! over the limit) hands the connection, with the bytes read so far, to hyper for the rest of
//! its life, so there is one place for the rare cases and their errors (400, 431, ...).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::body::Counted;
use super::headers::{connection_tokens, host_name, is_hop_by_hop, visible};
use super::pool::{Link, connect};
use super::signals::{ERROR, ReplicaSignals, class_of};
use super::table::Table;
use super::{Conn, Inner, Refusal, client_bucket, sides};

/// hyper's default too.
const MAX_HEADERS: usize = 100;
/// What one read asks for at most; also the most a response body holds in the proxy at once.
const READ_CHUNK: usize = 16 * 1024;

/// How a client connection left the fast path.
pub(crate) enum Exit {
    /// Closed: by either side, a timeout, a broken response or shutdown.
    Closed,
    /// The rest of the connection is hyper's; `stopping` when shutdown already began.
    Handoff { io: Prefixed, stopping: bool },
}

/// Serves the connection's plain HTTP/1.1 requests until it closes or one is not plain.
pub(crate) async fn serve(
    conn: &Conn,
    mut client: TcpStream,
    stop: &mut watch::Receiver<bool>,
) -> Exit {
    let inner = &*conn.inner;
    let options = &inner.options;
    let mut stopping = *stop.borrow();
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut reply = BytesMut::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    // The connection's last link, kept while its requests go to the same replica.
    let mut bound: Option<Link> = None;
    // One timer for the connection, moved for each phase: moving a deadline later is cheap.
    let timer = tokio::time::sleep(options.client_idle_timeout);
    tokio::pin!(timer);
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        timer
            .as_mut()
            .reset(tokio::time::Instant::now() + options.client_idle_timeout);
        let request = loop {
            if !input.is_empty() {
                match parse_request(conn, &input, &mut out) {
                    Parsed::Plain(request) => break request,
                    Parsed::Partial if input.len() < options.max_header_bytes => {}
                    Parsed::Partial | Parsed::Other => {
                        if let Some(link) = bound {
                            inner.links.put(link);
                        }
                        let io = Prefixed {
                            prefix: input,
                            stream: client,
                        };
                        return Exit::Handoff { io, stopping };
                    }
                }
            } else if stopping {
                return close(inner, bound);
            }
            room(&mut input);
            let read = tokio::select! {
                biased;
                read = client.read_buf(&mut input) => read,
                _ = &mut timer => return close(inner, bound),
                _ = &mut stopped, if !stopping => {
                    stopping = true;
                    continue;
                }
            };
            if !matches!(read, Ok(n) if n > 0) {
                return close(inner, bound);
            }
        };
        input.advance(request.head_len);
        let closing = request.close || stopping;
        let head_request = request.head_request;
        let table = match request.route {
            Ok(table) => table,
            Err(refusal) => {
                let closing = closing || refusal.closes_connection();
                if !refuse(&mut client, &mut out, &refusal, head_request, closing).await || closing
                {
                    return close(inner, bound);
                }
                continue;
            }
        };

        let started = std::time::Instant::now();
        timer
            .as_mut()
            .reset(tokio::time::Instant::from_std(started) + options.request_timeout);
        let mut last: Option<Arc<ReplicaSignals>> = None;
        let exchange = Exchange {
            inner,
            table: &table,
            canary_first: request.canary_first,
            head_request,
            closing,
        };
        let outcome = tokio::select! {
            biased;
            answer = exchange.run(&mut out, &mut bound, &mut reply, &mut last) => answer,
            _ = &mut timer => Err(Refusal::Timeout(
                table.service.clone(),
                options.request_timeout.as_millis(),
            )),
        };
        let latency_s = started.elapsed().as_secs_f64();
        let answer = match outcome {
            Ok(answer) => answer,
            Err(refusal) => {
                if refusal.counts_as_error()
                    && let Some(s) = &last
                {
                    s.record(ERROR, latency_s);
                }
                if !refuse(&mut client, &mut out, &refusal, head_request, closing).await || closing
                {
                    return close(inner, bound);
                }
                continue;
            }
        };
        let Answer {
            mut link,
            counted,
            status,
            mut framing,
            reusable,
        } = answer;
        let relayed = relay(
            &mut client,
            &mut link.stream,
            &mut reply,
            &out,
            &mut framing,
        )
        .await;
        let class = match relayed {
            Relayed::UpstreamBroke => ERROR,
            _ => class_of(status),
        };
        counted.signals().record(class, latency_s);
        drop(counted);
        if matches!(relayed, Relayed::Done) && reusable && reply.is_empty() {
            link.since = std::time::Instant::now();
            bound = Some(link);
        }
        if !matches!(relayed, Relayed::Done) || closing || matches!(framing, Framing::Close) {
            // A clean end for a client that reads until the close.
            let _ = client.shutdown().await;
            return close(inner, bound);
        }
    }
}

fn close(inner: &Inner, bound: Option<Link>) -> Exit {
    if let Some(link) = bound {
        inner.links.put(link);
    }
    Exit::Closed
}

/// Room for one more read.
fn room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

/// Writes the proxy's own answer (its head alone to a HEAD request); false when the client is
/// gone.
async fn refuse(
    client: &mut TcpStream,
    out: &mut Vec<u8>,
    refusal: &Refusal,
    head_request: bool,
    close: bool,
) -> bool {
    let status = refusal.status();
    let body = refusal.message();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !head_request {
        out.extend_from_slice(body.as_bytes());
    }
    client.write_all(out).await.is_ok()
}

/// A plain request, its head already rewritten for the replica (or what the proxy answers
/// itself).
struct Plain {
    head_len: usize,
    route: Result<Arc<Table>, Refusal>,
    canary_first: bool,
    head_request: bool,
    /// The client asked to close after this request.
    close: bool,
}

enum Parsed {
    Plain(Plain),
    Partial,
    /// Not for the fast path.
    Other,
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Parses a request head from `input`; when it is plain, writes the head the replica gets
/// into `out` (hop-by-hop headers out, `X-Forwarded-*` set, as [`super::headers::prepare_request`]
/// does for hyper's requests).
fn parse_request(conn: &Conn, input: &[u8], out: &mut Vec<u8>) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Other;
    };
    if !path.starts_with('/') {
        return Parsed::Other;
    }
    let mut host: Option<&[u8]> = None;
    let mut hosts = 0;
    let mut close = false;
    // Names the client's `Connection` header lists (besides the standard hop-by-hop ones).
    let mut listed: Vec<&str> = Vec::new();
    for h in req.headers.iter() {
        let name = h.name;
        if eq(name, "transfer-encoding") || eq(name, "upgrade") || eq(name, "expect") {
            return Parsed::Other;
        }
        if eq(name, "content-length") {
            if h.value.trim_ascii() != b"0" {
                return Parsed::Other;
            }
        } else if eq(name, "host") {
            host = host.or(Some(h.value));
            hosts += 1;
        } else if eq(name, "connection") {
            let (says_close, upgrade) = connection_tokens(h.value, &mut listed);
            if upgrade {
                return Parsed::Other;
            }
            close |= says_close;
        }
    }
    let head_request = method == "HEAD";
    let refused = |refusal: Refusal| {
        Parsed::Plain(Plain {
            head_len,
            route: Err(refusal),
            canary_first: false,
            head_request,
            close,
        })
    };
    if hosts > 1 {
        return refused(Refusal::HostTwice);
    }
    let host_text = host.and_then(visible);
    let table = conn.routes.load().find(host_text.map(host_name));
    let Some(table) = table else {
        let host = host_text.unwrap_or("(none)").to_string();
        return refused(Refusal::NoRoute(host));
    };
    let canary_first = match &table.canary {
        Some((_, weight)) => {
            let headers = req.headers.iter().map(|h| (h.name, h.value));
            client_bucket(&table, headers, conn.peer.ip().to_canonical()) < *weight
        }
        None => false,
    };

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut forwarded_for: Option<Vec<u8>> = None;
    for h in req.headers.iter() {
        let name = h.name;
        if eq(name, "x-forwarded-for") {
            // Only a request that already went through proxies pays for building the chain.
            if let Some(v) = visible(h.value) {
                let chain = forwarded_for.get_or_insert_with(Vec::new);
                chain.extend_from_slice(v.as_bytes());
                chain.extend_from_slice(b", ");
            }
            continue;
        }
        if is_hop_by_hop(name)
            || eq(name, "x-forwarded-proto")
            || eq(name, "x-forwarded-host")
            || listed.iter().any(|l| eq(l, name))
        {
            continue;
        }
        put_header(out, name.as_bytes(), h.value);
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if let Some(chain) = &forwarded_for {
        out.extend_from_slice(chain);
    }
    out.extend_from_slice(conn.client_address.as_bytes());
    // The proxy serves plain HTTP; a TLS terminator in front sets its own headers upstream of us.
    out.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n");
    if let Some(host) = host {
        put_header(out, b"x-forwarded-host", host);
    }
    out.extend_from_slice(b"\r\n");
    Parsed::Plain(Plain {
        head_len,
        route: Ok(table),
        canary_first,
        head_request,
        close,
    })
}

/// How a response body ends.
#[derive(Debug)]
enum Framing {
    Empty,
    Length(u64),
    Chunked(ChunkScan),
    /// At the replica's close (and then the client's connection closes too).
    Close,
}

/// A replica's response head, parsed.
struct Head {
    len: usize,
    status: u16,
    framing: Framing,
    /// The link can take another request after this response.
    reusable: bool,
}

/// Parses a response head from `input`; for a final response writes the head the client
/// gets into `out`. `Ok(None)`: not complete yet; `Err`: not a valid response.
fn parse_response(
    input: &[u8],
    head_request: bool,
    closing: bool,
    out: &mut Vec<u8>,
) -> Result<Option<Head>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let len = match res.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let (Some(version), Some(status)) = (res.version, res.code) else {
        return Err(());
    };
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut keep_alive = version == 1;
    let mut listed: Vec<&str> = Vec::new();
    for h in res.headers.iter() {
        let name = h.name;
        if eq(name, "content-length") {
            // Repeated or listed values must agree (RFC 9110 8.6).
            for part in h.value.split(|&b| b == b',') {
                let digits = part.trim_ascii();
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || digits.len() > 19
                {
                    return Err(());
                }
                let n: u64 = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .ok_or(())?;
                if length.is_some_and(|l| l != n) {
                    return Err(());
                }
                length = Some(n);
            }
        } else if eq(name, "transfer-encoding") {
            let codings = visible(h.value).ok_or(())?;
            let last = codings.rsplit(',').next().unwrap_or("").trim();
            chunked = Some(eq(last, "chunked"));
        } else if eq(name, "connection") && connection_tokens(h.value, &mut listed).0 {
            keep_alive = false;
        }
    }
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304
    {
        Framing::Empty
    } else {
        match (chunked, length) {
            // Transfer-Encoding wins over Content-Length (RFC 9112 6.3).
            (Some(true), _) => Framing::Chunked(ChunkScan::default()),
            (Some(false), _) | (None, None) => Framing::Close,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
        }
    };
    let close = closing || matches!(framing, Framing::Close);
    let passes_framing = matches!(framing, Framing::Chunked(_) | Framing::Close);
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    // httparse reads exactly three digits.
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in res.headers.iter() {
        let name = h.name;
        // The body passes through as it came, so its framing headers stay with it.
        let framing_header = eq(name, "transfer-encoding") || eq(name, "trailer");
        let keep = if framing_header {
            passes_framing
        } else if eq(name, "content-length") {
            !matches!(framing, Framing::Chunked(_))
        } else {
            !is_hop_by_hop(name) && !listed.iter().any(|l| eq(l, name))
        };
        if keep {
            put_header(out, name.as_bytes(), h.value);
        }
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(Head {
        len,
        status,
        reusable: keep_alive && !matches!(framing, Framing::Close),
        framing,
    }))
}

/// A response head from a replica, with what its body needs.
struct Answer {
    link: Link,
    counted: Counted,
    status: u16,
    framing: Framing,
    reusable: bool,
}

/// One request's way to a replica and back to its response head.
struct Exchange<'a> {
    inner: &'a Inner,
    table: &'a Table,
    canary_first: bool,
    head_request: bool,
    closing: bool,
}

impl Exchange<'_> {
    /// Sends the request head in `out` to a ready replica of the client's side (then the other
    /// side), moving on only while the request has not reached one; then reads the response
    /// head into `reply` and writes the client's head into `out`.
    async fn run(
        self,
        out: &mut Vec<u8>,
        bound: &mut Option<Link>,
        reply: &mut BytesMut,
        last: &mut Option<Arc<ReplicaSignals>>,
    ) -> Result<Answer, Refusal> {
        let options = &self.inner.options;
        let mut tried: Vec<usize> = Vec::new();
        let mut attempts = 0;
        for side in sides(self.table, self.canary_first).into_iter().flatten() {
            while attempts < options.connect_attempts.max(1) {
                let Some(backend) = side.pick(self.table.balance, &tried) else {
                    break;
                };
                attempts += 1;
                *last = Some(backend.signals.clone());
                let counted = Counted::new(backend.upstream.begin(), backend.signals.clone());
                let Some(mut link) = self.deliver(bound, backend.upstream.addr, out).await else {
                    backend.signals.connect_failures.inc();
                    tried.push(Arc::as_ptr(&backend.upstream) as usize);
                    continue;
                };
                // The request reached the replica: from here it is not sent again.
                let replica = || backend.upstream.replica.clone();
                reply.clear();
                let head = self
                    .read_head(&mut link.stream, reply, out)
                    .await
                    .map_err(|_| Refusal::Upstream(replica()))?;
                if head.status == 101 {
                    return Err(Refusal::Switched(replica()));
                }
                return Ok(Answer {
                    link,
                    counted,
                    status: head.status,
                    framing: head.framing,
                    reusable: head.reusable,
                });
            }
        }
        let service = self.table.service.clone();
        Err(if attempts == 0 {
            Refusal::NoReady(service)
        } else {
            Refusal::Connect(service)
        })
    }

    /// A link to `addr` with `head` written on it: the connection's own, an idle one, else a
    /// new one. None when no connection could be made (nothing reached the replica). A write
    /// that fails on a kept link means the replica closed it; the next one is tried.
    async fn deliver(
        &self,
        bound: &mut Option<Link>,
        addr: SocketAddr,
        head: &[u8],
    ) -> Option<Link> {
        let links = &self.inner.links;
        let idle_timeout = self.inner.options.upstream_idle_timeout;
        let mut own = match bound.take() {
            Some(link) if link.addr == addr => Some(link),
            Some(link) => {
                links.put(link);
                None
            }
            None => None,
        };
        loop {
            let kept = match own.take() {
                Some(link) if link.reusable(idle_timeout) => Some(link),
                _ => links.take(addr),
            };
            let Some(mut link) = kept else { break };
            if link.stream.write_all(head).await.is_ok() {
                return Some(link);
            }
        }
        let mut stream = connect(addr, self.inner.options.connect_timeout)
            .await
            .ok()?;
        stream.write_all(head).await.ok()?;
        Some(Link {
            addr,
            stream,
            since: std::time::Instant::now(),
        })
    }

    /// The final response head (informational ones are skipped, as hyper's client does).
    async fn read_head(
        &self,
        stream: &mut TcpStream,
        reply: &mut BytesMut,
        out: &mut Vec<u8>,
    ) -> Result<Head, ()> {
        let limit = self.inner.options.max_header_bytes;
        loop {
            if !reply.is_empty() {
                match parse_response(reply, self.head_request, self.closing, out)? {
                    Some(head) if (100..200).contains(&head.status) && head.status != 101 => {
                        reply.advance(head.len);
                        continue;
                    }
                    Some(head) => {
                        reply.advance(head.len);
                        return Ok(head);
                    }
                    None if reply.len() >= limit => return Err(()),
                    None => {}
                }
            }
            room(reply);
            match stream.read_buf(reply).await {
                Ok(n) if n > 0 => {}
                _ => return Err(()),
            }
        }
    }
}

enum Relayed {
    Done,
    ClientGone,
    /// The replica's body broke off or was malformed: the client's response is cut short.
    UpstreamBroke,
}

/// Writes the client's head (`head`) with the body's first bytes from `reply`, then copies
/// the rest of the body as it arrives. Leaves in `reply` what came after the body.
async fn relay(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    reply: &mut BytesMut,
    head: &[u8],
    framing: &mut Framing,
) -> Relayed {
    let Ok((n, mut done)) = take(framing, reply) else {
        return Relayed::UpstreamBroke;
    };
    // Head and first bytes in one write: for small responses, the whole answer.
    let first = [io::IoSlice::new(head), io::IoSlice::new(&reply[..n])];
    if write_all_vectored(client, &first).await.is_err() {
        return Relayed::ClientGone;
    }
    reply.advance(n);
    while !done {
        room(reply);
        match upstream.read_buf(reply).await {
            Ok(0) if matches!(framing, Framing::Close) => return Relayed::Done,
            Ok(n) if n > 0 => {}
            _ => return Relayed::UpstreamBroke,
        }
        let Ok((n, end)) = take(framing, reply) else {
            return Relayed::UpstreamBroke;
        };
        if client.write_all(&reply[..n]).await.is_err() {
            return Relayed::ClientGone;
        }
        reply.advance(n);
        done = end;
    }
    Relayed::Done
}

/// How many bytes at the start of `data` belong to the body, and whether the body ends there.
fn take(framing: &mut Framing, data: &[u8]) -> Result<(usize, bool), ChunkError> {
    Ok(match framing {
        Framing::Empty => (0, true),
        Framing::Length(left) => {
            let n = usize::try_from(*left).map_or(data.len(), |l| l.min(data.len()));
            *left -= n as u64;
            (n, *left == 0)
        }
        Framing::Chunked(scan) => scan.scan(data)?,
        Framing::Close => (data.len(), false),
    })
}

async fn write_all_vectored(stream: &mut TcpStream, parts: &[io::IoSlice<'_>]) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let written = stream.write_vectored(parts).await?;
    if written == total {
        return Ok(());
    }
    // A short write (a full socket buffer): the rest in order.
    let mut skip = written;
    for part in parts {
        if skip >= part.len() {
            skip -= part.len();
            continue;
        }
        stream.write_all(&part[skip..]).await?;
        skip = 0;
    }
    Ok(())
}

/// A chunked body that does not follow RFC 9112 7.1.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ChunkError;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ChunkState {
    /// Hex digits of a chunk size (`digits` so far).
    #[default]
    Size,
    /// After the size: whitespace or an extension, up to CR.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// Finds where a chunked body ends without decoding it: the bytes pass through unchanged.
#[derive(Clone, Debug, Default)]
pub(crate) struct ChunkScan {
    state: ChunkState,
    /// The chunk size being read, then the data left in the chunk.
    size: u64,
    digits: u8,
}

impl ChunkScan {
    /// Reads on through `data`: how many of its bytes belong to the body, and whether the body
    /// ended with them (then the rest of `data` is not part of it).
    pub fn scan(&mut self, data: &[u8]) -> Result<(usize, bool), ChunkError> {
        use ChunkState::*;
        let mut i = 0;
        while i < data.len() {
            if self.state == Data {
                let n =
                    usize::try_from(self.size).map_or(data.len() - i, |s| s.min(data.len() - i));
                i += n;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            self.state = match (self.state, b) {
                (Size, b) if b.is_ascii_hexdigit() => {
                    // 15 hex digits: more than any body, and no overflow.
                    if self.digits == 15 {
                        return Err(ChunkError);
                    }
                    self.digits += 1;
                    self.size = self.size * 16 + u64::from((b as char).to_digit(16).unwrap_or(0));
                    Size
                }
                (Size, b';' | b' ' | b'\t') if self.digits > 0 => Extension,
                (Size, b'\r') if self.digits > 0 => SizeLf,
                (Extension, b'\r') => SizeLf,
                (Extension, b'\n') => return Err(ChunkError),
                (Extension, _) => Extension,
                (SizeLf, b'\n') if self.size == 0 => TrailerStart,
                (SizeLf, b'\n') => Data,
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => {
                    self.digits = 0;
                    Size
                }
                (TrailerStart, b'\r') => EndLf,
                (TrailerStart | Trailer, b'\n') => return Err(ChunkError),
                (TrailerStart | Trailer, _) if b != b'\r' => Trailer,
                (Trailer, b'\r') => TrailerLf,
                (TrailerLf, b'\n') => TrailerStart,
                (EndLf, b'\n') => {
                    self.state = Done;
                    return Ok((i, true));
                }
                _ => return Err(ChunkError),
            };
        }
        Ok((i, self.state == Done))
    }
}

/// The client's connection for hyper: the bytes the fast path read but did not use come first.
pub(crate) struct Prefixed {
    prefix: BytesMut,
    stream: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scan_all(pieces: &[&[u8]]) -> Result<(usize, bool), ChunkError> {
        let mut scan = ChunkScan::default();
        let mut total = 0;
        for piece in pieces {
            let (n, done) = scan.scan(piece)?;
            total += n;
            if done {
                return Ok((total, true));
            }
        }
        Ok((total, false))
    }

    #[test]
    fn a_chunked_body_ends_after_its_last_chunk_and_trailers() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        assert_eq!(scan_all(&[body]), Ok((end, true)));
        let bare = b"0\r\n\r\n";
        assert_eq!(scan_all(&[bare]), Ok((5, true)));
        assert_eq!(scan_all(&[b"5\r\nhel"]), Ok((6, false)));
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"5\nhello",
            b"5\r\nhelloX",
            b"0\r\n\n",
            b"1234567890abcdef0\r\n",
            b"0\r\nx: 1\n",
        ] {
            assert_eq!(
                scan_all(&[bad]),
                Err(ChunkError),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn encode(chunks: &[Vec<u8>], ext: bool, trailers: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            out.extend_from_slice(format!("{:X}", c.len()).as_bytes());
            if ext {
                out.extend_from_slice(b" ;name=\"v\"");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        for t in trailers {
            out.extend_from_slice(format!("x-{t}: {t}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest! {
        #[test]
        fn the_end_is_found_however_the_body_is_split(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
            ext in any::<bool>(),
            trailers in prop::collection::vec("[a-z]{1,8}", 0..3),
            after in prop::collection::vec(any::<u8>(), 0..20),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let body = encode(&chunks, ext, &trailers);
            let mut all = body.clone();
            all.extend_from_slice(&after);
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(all.len() + 1)).collect();
            at.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for cut in at.into_iter().chain([all.len()]) {
                pieces.push(&all[from..cut]);
                from = cut;
            }
            prop_assert_eq!(scan_all(&pieces), Ok((body.len(), true)));
        }
    }

    fn response(raw: &str, head_request: bool) -> (Head, String) {
        let mut out = Vec::new();
        let head = parse_response(raw.as_bytes(), head_request, false, &mut out)
            .unwrap()
            .unwrap();
        (head, String::from_utf8(out).unwrap())
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let (h, out) = response(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\nx-kept: 1\r\n\r\nabc",
            false,
        );
        assert!(matches!(h.framing, Framing::Length(3)) && h.reusable);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nx-kept: 1\r\n\r\n"
        );

        // Transfer-Encoding wins; the body passes through chunked, Content-Length goes.
        let (h, out) = response(
            "HTTP/1.1 200 OK\r\ncontent-length: 9\r\ntransfer-encoding: chunked\r\n\r\n",
            false,
        );
        assert!(matches!(h.framing, Framing::Chunked(_)) && h.reusable);
        assert_eq!(out, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");

        // No length: the body ends at the close, and so does the client's connection.
        let (h, out) = response("HTTP/1.1 200 OK\r\n\r\n", false);
        assert!(matches!(h.framing, Framing::Close) && !h.reusable);
        assert_eq!(out, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");

        let (h, _) = response("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", true);
        assert!(matches!(h.framing, Framing::Empty) && h.reusable);
        let (h, _) = response(
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n",
            false,
        );
        assert!(matches!(h.framing, Framing::Empty));
        let (h, _) = response("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false);
        assert!(
            !h.reusable,
            "an HTTP/1.0 replica closes after each response"
        );
        let (h, _) = response(
            "HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\nconnection: close\r\n\r\n",
            false,
        );
        assert!(matches!(h.framing, Framing::Length(2)) && !h.reusable);

        let mut out = Vec::new();
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "NOT HTTP\r\n\r\n",
        ] {
            assert!(
                parse_response(bad.as_bytes(), false, false, &mut out).is_err(),
                "{bad}"
            );
        }
    }
}
