//! The built-in reverse proxy the local target puts in front of a service's replicas.
//!
//! Each listener keeps its routes behind one atomic pointer: a switch (blue-green, a canary step,
//! a rollback) is a single store, and a request reads the table once, so it never sees half of
//! an update. A request picks a ready replica, counts itself in flight on it until its response
//! body has been sent (or the client left), and streams both bodies without buffering them.
//! Plain HTTP/1.1 requests take a direct path ([`fast`]); the rest go through hyper.

mod body;
mod fast;
mod headers;
mod pool;
mod signals;
mod table;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, COOKIE, HOST, HeaderValue, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use body::ProxyBody;
pub use table::{Balance, RouteTable};

use body::{Counted, Finish};
use pool::{Links, Pool, Sender};
use signals::{ERROR, Families, ReplicaSignals, class_of};
use table::{Backend, Side, StickyKey, Table, bucket, cookie_value};

use crate::spec::Drain;
use crate::target::{DrainReport, TrafficStats};
use crate::upstream::Upstream;

/// Limits and timeouts of a [`Proxy`].
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// From a request's arrival to the replica's response headers; then 504.
    pub request_timeout: Duration,
    /// A TCP connect to a replica; then the request is tried on another replica.
    pub connect_timeout: Duration,
    /// An HTTP/1.1 client connection is closed when the next request's headers have not fully
    /// arrived in this time (an idle keep-alive connection, or a slow client).
    pub client_idle_timeout: Duration,
    /// Idle connections to replicas are not reused after this long. Below the 5 s keep-alive of
    /// Node.js and many other servers, so the proxy does not write to a connection the replica
    /// is closing at that moment (a request sent there could not be retried).
    pub upstream_idle_timeout: Duration,
    pub max_idle_per_upstream: usize,
    /// Largest request or response head (start line and headers); larger client requests get
    /// 431.
    pub max_header_bytes: usize,
    /// Replicas tried for one request when connecting to them fails.
    pub connect_attempts: usize,
    /// The balancing of [`Proxy::route_table`].
    pub balance: Balance,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            client_idle_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(4),
            max_idle_per_upstream: 256,
            max_header_bytes: 64 * 1024,
            connect_attempts: 3,
            balance: Balance::RoundRobin,
        }
    }
}

/// The routes of one listen address: by host name (lowercase, no port), and for any host.
#[derive(Clone, Default)]
struct Routes {
    hosts: HashMap<String, Arc<Table>>,
    any: Option<Arc<Table>>,
}

impl Routes {
    fn find(&self, host: Option<&str>) -> Option<Arc<Table>> {
        let by_host = host.and_then(|h| {
            self.hosts.get(h).or_else(|| {
                h.bytes()
                    .any(|b| b.is_ascii_uppercase())
                    .then(|| self.hosts.get(&h.to_ascii_lowercase()))
                    .flatten()
            })
        });
        by_host.or(self.any.as_ref()).cloned()
    }
}

struct Listener {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Inner {
    options: ProxyOptions,
    pool: Arc<Pool>,
    /// The fast path's connections to replicas (see [`fast`]).
    links: Links,
    families: Families,
    server: auto::Builder<TokioExecutor>,
    /// Routes by listen address; the mutex only orders writers, requests read the `ArcSwap`.
    routes: Mutex<HashMap<SocketAddr, Arc<ArcSwap<Routes>>>>,
    listeners: Mutex<HashMap<SocketAddr, Listener>>,
}

impl Inner {
    fn forget_connections(&self, addr: SocketAddr) {
        self.pool.forget(addr);
        self.links.forget(addr);
    }
}

/// The reverse proxy (one per server; clones share it).
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Proxy {
    pub fn new(options: ProxyOptions) -> Proxy {
        let mut server = auto::Builder::new(TokioExecutor::new());
        server
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(options.client_idle_timeout)
            .max_buf_size(options.max_header_bytes.max(8192))
            .keep_alive(true);
        server
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX));
        let pool = Arc::new(Pool::new(
            options.upstream_idle_timeout,
            options.max_idle_per_upstream,
            options.connect_timeout,
            options.max_header_bytes,
        ));
        let links = Links::new(options.upstream_idle_timeout, options.max_idle_per_upstream);
        Proxy {
            inner: Arc::new(Inner {
                options,
                pool,
                links,
                families: Families::new(),
                server,
                routes: Mutex::new(HashMap::new()),
                listeners: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A route table of one version with the proxy's default balancing.
    pub fn route_table(&self, service: &str, stable: Vec<Arc<Upstream>>) -> RouteTable {
        RouteTable {
            service: service.to_string(),
            stable,
            canary: None,
            sticky: None,
            balance: self.inner.options.balance,
        }
    }

    /// Starts listening on `addr` (`HOST:PORT`; port 0 picks one) unless already listening
    /// there; returns the bound address. HTTP/1.1 and HTTP/2 (prior knowledge) on one port.
    pub async fn listen(&self, addr: &str) -> std::io::Result<SocketAddr> {
        let wanted: Vec<SocketAddr> = tokio::net::lookup_host(addr).await?.collect();
        let existing = |wanted: &[SocketAddr]| {
            let listeners = lock(&self.inner.listeners);
            wanted
                .iter()
                .find(|a| a.port() != 0 && listeners.contains_key(a))
                .copied()
        };
        if let Some(a) = existing(&wanted) {
            return Ok(a);
        }
        let listener = match TcpListener::bind(&wanted[..]).await {
            Ok(l) => l,
            // Another call bound it meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return existing(&wanted).ok_or(e);
            }
            Err(e) => return Err(e),
        };
        let local = listener.local_addr()?;
        let routes = self.slot(local);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(self.inner.clone(), listener, routes, stopped));
        lock(&self.inner.listeners).insert(local, Listener { stop, task });
        Ok(local)
    }

    fn slot(&self, listen: SocketAddr) -> Arc<ArcSwap<Routes>> {
        lock(&self.inner.routes).entry(listen).or_default().clone()
    }

    /// Atomically replaces what `listen` + `host` (none: any host) sends traffic to.
    pub fn set_route(&self, listen: SocketAddr, host: Option<&str>, table: RouteTable) {
        let table = Arc::new(self.compile(table));
        self.update(listen, |routes| match host {
            Some(h) => {
                routes.hosts.insert(h.to_ascii_lowercase(), table);
            }
            None => routes.any = Some(table),
        });
    }

    /// The replicas the route of `listen` + `host` sends traffic to now (both sides).
    pub fn routed(&self, listen: SocketAddr, host: Option<&str>) -> Vec<Arc<Upstream>> {
        let Some(slot) = lock(&self.inner.routes).get(&listen).cloned() else {
            return Vec::new();
        };
        let routes = slot.load();
        let table = match host {
            Some(h) => routes.hosts.get(&h.to_ascii_lowercase()).cloned(),
            None => routes.any.clone(),
        };
        let Some(table) = table else {
            return Vec::new();
        };
        let mut out: Vec<Arc<Upstream>> = table
            .stable
            .backends
            .iter()
            .map(|b| b.upstream.clone())
            .collect();
        if let Some((side, _)) = &table.canary {
            out.extend(side.backends.iter().map(|b| b.upstream.clone()));
        }
        out
    }

    pub fn remove_route(&self, listen: SocketAddr, host: Option<&str>) {
        self.update(listen, |routes| match host {
            Some(h) => {
                routes.hosts.remove(&h.to_ascii_lowercase());
            }
            None => routes.any = None,
        });
    }

    fn update(&self, listen: SocketAddr, change: impl FnOnce(&mut Routes)) {
        // Held across load and store so two writers cannot lose each other's change.
        let mut all = lock(&self.inner.routes);
        let slot = all.entry(listen).or_default();
        let mut next = Routes::clone(&slot.load());
        change(&mut next);
        slot.store(Arc::new(next));
    }

    fn compile(&self, table: RouteTable) -> Table {
        let side = |ups: Vec<Arc<Upstream>>| {
            Side::new(
                ups.into_iter()
                    .map(|upstream| Backend {
                        signals: self.inner.families.replica(&upstream),
                        upstream,
                    })
                    .collect(),
            )
        };
        Table {
            stable: side(table.stable),
            canary: table.canary.map(|(ups, w)| (side(ups), w.min(100))),
            sticky: table.sticky.as_ref().and_then(StickyKey::from_spec),
            balance: table.balance,
            service: table.service,
        }
    }

    /// Cumulative numbers of one service version.
    pub fn stats(&self, service: &str, version: &str) -> TrafficStats {
        self.inner.families.stats(service, version)
    }

    /// Waits until `upstreams` have nothing in flight or `drain.timeout_ms` passed; then gives
    /// their upgraded connections up to `drain.upgrade_grace_ms` and closes those still open.
    pub async fn drain(&self, upstreams: &[Arc<Upstream>], drain: &Drain) -> DrainReport {
        const TICK: Duration = Duration::from_millis(5);
        let start = Instant::now();
        let in_flight = || upstreams.iter().map(|u| u.in_flight()).sum::<u64>();
        let upgraded = || upstreams.iter().map(|u| u.upgraded()).sum::<u64>();
        // One tick first: a request that read the old table just before the switch counts
        // itself right after (no await in between), so it is seen here.
        tokio::time::sleep(TICK).await;
        let deadline = start + Duration::from_millis(drain.timeout_ms);
        while in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(TICK).await;
        }
        let cut_requests = in_flight();
        let grace_end = Instant::now() + Duration::from_millis(drain.upgrade_grace_ms);
        while upgraded() > 0 && Instant::now() < grace_end {
            tokio::time::sleep(TICK).await;
        }
        let closed_upgrades = upgraded();
        if closed_upgrades > 0 {
            for u in upstreams {
                u.close_upgraded();
            }
            // The tunnels end on their next poll; wait briefly so the report holds.
            let until = Instant::now() + Duration::from_secs(1);
            while upgraded() > 0 && Instant::now() < until {
                tokio::time::sleep(TICK).await;
            }
        }
        for u in upstreams {
            self.inner.forget_connections(u.addr);
        }
        DrainReport {
            cut_requests,
            closed_upgrades,
            elapsed_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Forgets replicas that were stopped: their metric series (so `/metrics` does not keep
    /// every version ever deployed) and their idle connections. The version's
    /// [`Proxy::stats`] stay. Call it only for replicas no route uses any more.
    pub fn forget(&self, upstreams: &[Arc<Upstream>]) {
        for u in upstreams {
            self.inner.families.forget(u);
            self.inner.forget_connections(u.addr);
        }
    }

    /// Registers the golden signals (`proxy_*`) on `registry` (once per registry).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.families.register(registry);
    }

    /// Stops every listener; open connections finish their current request and close.
    pub async fn shutdown(&self) {
        let listeners: Vec<Listener> = lock(&self.inner.listeners)
            .drain()
            .map(|(_, l)| l)
            .collect();
        for l in listeners {
            let _ = l.stop.send(true);
            let _ = l.task.await;
        }
    }
}

/// What a client connection's requests need.
struct Conn {
    inner: Arc<Inner>,
    routes: Arc<ArcSwap<Routes>>,
    peer: SocketAddr,
    /// The peer's `X-Forwarded-For` entry, formatted once.
    client_address: HeaderValue,
}

async fn accept_loop(
    inner: Arc<Inner>,
    listener: TcpListener,
    routes: Arc<ArcSwap<Routes>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn {
            inner: inner.clone(),
            routes: routes.clone(),
            peer,
            client_address: headers::client_address(peer.ip().to_canonical()),
        });
        let mut stop = stop.clone();
        tokio::spawn(async move {
            // Plain HTTP/1.1 requests are served by the fast path; it hands the connection to
            // hyper (below) at the first request it does not take, and only after bytes came,
            // so hyper's header timeout (which starts with the first bytes) always applies.
            let (io, stopping) = match fast::serve(&conn, stream, &mut stop).await {
                fast::Exit::Closed => return,
                fast::Exit::Handoff { io, stopping } => (io, stopping),
            };
            let server = conn.inner.clone();
            let service = hyper::service::service_fn(move |req| {
                let conn = conn.clone();
                async move { Ok::<_, Infallible>(handle(&conn, req).await) }
            });
            let serving = server
                .server
                .serve_connection_with_upgrades(TokioIo::new(io), service);
            tokio::pin!(serving);
            if stopping {
                serving.as_mut().graceful_shutdown();
                let _ = serving.await;
                return;
            }
            tokio::select! {
                _ = serving.as_mut() => {}
                _ = stop.changed() => {
                    serving.as_mut().graceful_shutdown();
                    let _ = serving.await;
                }
            }
        });
    }
}

/// An answer of the proxy's own instead of a replica's.
enum Refusal {
    /// No route for this host.
    NoRoute(String),
    /// The service has no ready replica.
    NoReady(String),
    /// Every replica tried refused or timed out the connection.
    Connect(String),
    /// The request reached this replica and got no response.
    Upstream(String),
    /// The service took longer than the request timeout (ms).
    Timeout(String, u128),
    /// This replica answered 101 to a request that asked for no upgrade.
    Switched(String),
    /// The request has more than one `Host` header (RFC 9112 3.2: a server answers 400).
    HostTwice,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::NoRoute(_) => StatusCode::NOT_FOUND,
            Refusal::NoReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Connect(_) | Refusal::Upstream(_) | Refusal::Switched(_) => {
                StatusCode::BAD_GATEWAY
            }
            Refusal::Timeout(..) => StatusCode::GATEWAY_TIMEOUT,
            Refusal::HostTwice => StatusCode::BAD_REQUEST,
        }
    }

    fn message(&self) -> String {
        match self {
            Refusal::NoRoute(host) => format!("no service is routed for host {host}\n"),
            Refusal::NoReady(service) => format!("no ready replica of service {service}\n"),
            Refusal::Connect(service) => {
                format!("no replica of service {service} accepted a connection\n")
            }
            Refusal::Upstream(replica) => {
                format!("replica {replica} closed the connection without a response\n")
            }
            Refusal::Timeout(service, ms) => {
                format!("service {service} did not answer within {ms} ms\n")
            }
            Refusal::Switched(replica) => {
                format!("replica {replica} switched protocols without being asked\n")
            }
            Refusal::HostTwice => "the request has more than one Host header\n".to_string(),
        }
    }

    /// Whether the client's connection closes after this answer: after a malformed request
    /// nothing more on the connection can be trusted.
    fn closes_connection(&self) -> bool {
        matches!(self, Refusal::HostTwice)
    }

    /// Whether the replica last tried gets an `error` for it (the request went to one).
    fn counts_as_error(&self) -> bool {
        !matches!(
            self,
            Refusal::NoRoute(_) | Refusal::NoReady(_) | Refusal::HostTwice
        )
    }

    fn response(&self) -> Response<ProxyBody> {
        text(self.status(), self.message())
    }
}

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut res = Response::new(ProxyBody::local(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// The bucket of the request's client (see [`table::bucket`]), from its headers (name, value)
/// in the order they came.
fn client_bucket<'h>(
    table: &Table,
    mut headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    peer: IpAddr,
) -> u8 {
    match &table.sticky {
        Some(StickyKey::Header(name)) => {
            if let Some((_, v)) = headers.find(|(n, _)| n.eq_ignore_ascii_case(name.as_str())) {
                return bucket(v);
            }
        }
        Some(StickyKey::Cookie(name)) => {
            for (_, v) in headers.filter(|(n, _)| n.eq_ignore_ascii_case(COOKIE.as_str())) {
                if let Some(s) = headers::visible(v)
                    && let Some(value) = cookie_value(s, name)
                {
                    return bucket(value.as_bytes());
                }
            }
        }
        None => {}
    }
    match peer {
        IpAddr::V4(a) => bucket(&a.octets()),
        IpAddr::V6(a) => bucket(&a.octets()),
    }
}

/// A response head from a replica, with what its body needs.
struct Sent {
    response: Response<Incoming>,
    counted: Counted,
    upstream: Arc<Upstream>,
    signals: Arc<ReplicaSignals>,
    sender: Sender,
}

enum Failure {
    NoReady,
    /// Every replica tried refused or timed out the connection.
    Connect,
    /// The request reached this replica and got no response.
    Upstream(String),
}

// Only ever returned, never stored: boxing the request would cost an allocation per retry.
#[allow(clippy::large_enum_variant)]
enum SendError {
    /// The request never left the proxy; it can go elsewhere.
    NotSent(Request<Incoming>),
    Sent,
}

async fn handle(conn: &Conn, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let inner = &conn.inner;
    if req.headers().get_all(HOST).iter().nth(1).is_some() {
        let refusal = Refusal::HostTwice;
        let mut res = refusal.response();
        // HTTP/2 has no `Connection` header (and no Host header either).
        if refusal.closes_connection() && req.version() < hyper::Version::HTTP_2 {
            res.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        return res;
    }
    let host = headers::request_host(&req).map(headers::host_name);
    let table = conn.routes.load().find(host);
    let Some(table) = table else {
        return Refusal::NoRoute(host.unwrap_or("(none)").to_string()).response();
    };
    let peer_ip = conn.peer.ip().to_canonical();
    let canary_first = match &table.canary {
        Some((_, weight)) => {
            let headers = req
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes()));
            client_bucket(&table, headers, peer_ip) < *weight
        }
        None => false,
    };
    let protocol = headers::upgrade_protocol(&req);
    let client_upgrade = protocol.as_ref().map(|_| hyper::upgrade::on(&mut req));
    headers::prepare_request(&mut req, &conn.client_address, protocol);

    let mut last: Option<Arc<ReplicaSignals>> = None;
    let attempt = forward(inner, &table, canary_first, req, &mut last);
    let outcome = tokio::time::timeout(inner.options.request_timeout, attempt).await;
    let service = || table.service.clone();
    let refusal = match outcome {
        Ok(Ok(sent)) => return respond(inner, sent, started, client_upgrade),
        Ok(Err(Failure::NoReady)) => Refusal::NoReady(service()),
        Ok(Err(Failure::Connect)) => Refusal::Connect(service()),
        Ok(Err(Failure::Upstream(replica))) => Refusal::Upstream(replica),
        Err(_) => Refusal::Timeout(service(), inner.options.request_timeout.as_millis()),
    };
    if refusal.counts_as_error()
        && let Some(s) = &last
    {
        s.record(ERROR, started.elapsed().as_secs_f64());
    }
    refusal.response()
}

/// The sides of a route in the order a request tries them: the client's side first. At weight
/// 0 the canary gets nothing, not even the stable side's failures.
fn sides(table: &Table, canary_first: bool) -> [Option<&Side>; 2] {
    let canary = table
        .canary
        .as_ref()
        .filter(|(_, w)| *w > 0)
        .map(|(s, _)| s);
    if canary_first {
        [canary, Some(&table.stable)]
    } else {
        [Some(&table.stable), canary]
    }
}

/// Sends the request to a ready replica of the client's side (then the other side), moving on
/// only while the request has not left the proxy.
async fn forward(
    inner: &Inner,
    table: &Table,
    canary_first: bool,
    mut req: Request<Incoming>,
    last: &mut Option<Arc<ReplicaSignals>>,
) -> Result<Sent, Failure> {
    let mut tried: Vec<usize> = Vec::new();
    let mut attempts = 0;
    for side in sides(table, canary_first).into_iter().flatten() {
        while attempts < inner.options.connect_attempts.max(1) {
            let Some(backend) = side.pick(table.balance, &tried) else {
                break;
            };
            attempts += 1;
            *last = Some(backend.signals.clone());
            let counted = Counted::new(backend.upstream.begin(), backend.signals.clone());
            match send(&inner.pool, backend.upstream.addr, req).await {
                Ok((response, sender)) => {
                    return Ok(Sent {
                        response,
                        counted,
                        upstream: backend.upstream.clone(),
                        signals: backend.signals.clone(),
                        sender,
                    });
                }
                Err(SendError::NotSent(r)) => {
                    req = r;
                    backend.signals.connect_failures.inc();
                    tried.push(Arc::as_ptr(&backend.upstream) as usize);
                }
                Err(SendError::Sent) => {
                    return Err(Failure::Upstream(backend.upstream.replica.clone()));
                }
            }
        }
    }
    if attempts == 0 {
        Err(Failure::NoReady)
    } else {
        Err(Failure::Connect)
    }
}

/// One replica: an idle pooled connection if there is one, else a new one.
async fn send(
    pool: &Pool,
    addr: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<(Response<Incoming>, Sender), SendError> {
    while let Some(mut sender) = pool.take(addr) {
        match sender.try_send_request(req).await {
            Ok(res) => return Ok((res, sender)),
            // The replica closed this idle connection before the request was written.
            Err(mut e) => match e.take_message() {
                Some(r) => req = r,
                None => return Err(SendError::Sent),
            },
        }
    }
    let Ok(mut sender) = pool.connect(addr).await else {
        return Err(SendError::NotSent(req));
    };
    match sender.try_send_request(req).await {
        Ok(res) => Ok((res, sender)),
        Err(mut e) => match e.take_message() {
            Some(r) => Err(SendError::NotSent(r)),
            None => Err(SendError::Sent),
        },
    }
}

fn respond(
    inner: &Inner,
    sent: Sent,
    started: Instant,
    client_upgrade: Option<OnUpgrade>,
) -> Response<ProxyBody> {
    let Sent {
        mut response,
        mut counted,
        upstream,
        signals,
        sender,
    } = sent;
    let latency_s = started.elapsed().as_secs_f64();
    let status = response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        signals.record(class_of(status.as_u16()), latency_s);
        counted.upgrade();
        // Subscribed now, so a drain that closes after this point reaches the tunnel.
        let close = upstream.upgraded_close_signal();
        tokio::spawn(tunnel(client_upgrade, upstream_upgrade, counted, close));
        // The connection belongs to the tunnel now.
        drop(sender);
        let (mut parts, _) = response.into_parts();
        let protocol = parts.headers.get(UPGRADE).cloned();
        headers::strip_hop_by_hop(&mut parts.headers);
        if let Some(p) = protocol {
            parts
                .headers
                .insert(CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(UPGRADE, p);
        }
        return Response::from_parts(parts, ProxyBody::empty());
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // A switch the client did not ask for (or over HTTP/2) cannot be passed on.
        signals.record(ERROR, latency_s);
        return Refusal::Switched(upstream.replica.clone()).response();
    }
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    let finish = Finish {
        counted,
        class: class_of(status.as_u16()),
        latency_s,
        conn: Some((inner.pool.clone(), upstream.addr, sender)),
    };
    Response::from_parts(parts, ProxyBody::upstream(body, finish))
}

/// Copies an upgraded connection both ways until either side closes or a drain closes it.
async fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    counted: Counted,
    mut close: watch::Receiver<u64>,
) {
    let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
        return;
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = close.changed() => {}
    }
    drop(counted);
}
