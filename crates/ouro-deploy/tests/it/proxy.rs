//! The built-in proxy against real upstream servers on loopback ports, with real HTTP clients.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ouro_deploy::proxy::{Balance, Proxy, ProxyOptions, RouteTable};
use ouro_deploy::spec::{Drain, Sticky};
use ouro_deploy::upstream::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const SERVICE: &str = "web";

/// A tiny HTTP/1.1 server answering with its name, counting its requests.
struct TestServer {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    /// `/hold` and the end of `/sse` wait until this is true.
    release: watch::Sender<bool>,
}

type TestBody = BoxBody<Bytes, Infallible>;

fn full(s: impl Into<Bytes>) -> TestBody {
    Full::new(s.into()).boxed()
}

async fn answer(
    name: &'static str,
    req: Request<Incoming>,
    mut release: watch::Receiver<bool>,
) -> Response<TestBody> {
    if req.uri().path() == "/first-chunk" {
        // Answers with the first piece of the request body, without waiting for the rest.
        let first = match req.into_body().frame().await {
            Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
            _ => Bytes::new(),
        };
        return Response::new(full(first));
    }
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    match req.uri().path() {
        "/headers" => {
            let lines: Vec<String> = [
                "host",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-hop",
                "keep-alive",
                "x-kept",
            ]
            .iter()
            .map(|n| format!("{n}={}", header(n)))
            .collect();
            Response::new(full(lines.join("\n")))
        }
        "/hold" => {
            let _ = release.wait_for(|r| *r).await;
            Response::new(full(name))
        }
        "/status/500" => {
            let mut r = Response::new(full("broken"));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
        "/sse" => {
            let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, Infallible>>();
            let _ = tx.unbounded_send(Ok(Frame::data(Bytes::from("data: first\n\n"))));
            tokio::spawn(async move {
                let _ = release.wait_for(|r| *r).await;
                let _ = tx.unbounded_send(Ok(Frame::data(Bytes::from("data: last\n\n"))));
            });
            let mut r = Response::new(StreamBody::new(rx).boxed());
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
        "/jitter" => {
            // A little time in the replica so switches happen with requests in flight.
            let micros = rand::random::<u64>() % 2000;
            tokio::time::sleep(Duration::from_micros(micros)).await;
            Response::new(full(name))
        }
        _ => Response::new(full(name)),
    }
}

async fn server(name: &'static str) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let (release, _) = watch::channel(false);
    let (h, r) = (hits.clone(), release.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (hits, release) = (h.clone(), r.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let rx = release.subscribe();
                    async move { Ok::<_, Infallible>(answer(name, req, rx).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TestServer {
        addr,
        hits,
        release,
    }
}

fn upstream(version: &str, index: u32, addr: SocketAddr) -> Arc<Upstream> {
    let u = Upstream::new(SERVICE, version, index, addr);
    u.set_ready(true);
    u
}

fn table(stable: Vec<Arc<Upstream>>) -> RouteTable {
    RouteTable {
        service: SERVICE.into(),
        stable,
        canary: None,
        sticky: None,
        balance: Balance::RoundRobin,
    }
}

async fn proxy_with(options: ProxyOptions) -> (Proxy, SocketAddr) {
    let proxy = Proxy::new(options);
    let addr = proxy.listen("127.0.0.1:0").await.unwrap();
    (proxy, addr)
}

async fn proxy() -> (Proxy, SocketAddr) {
    proxy_with(ProxyOptions::default()).await
}

/// One keep-alive HTTP/1.1 connection to the proxy.
struct Client {
    sender: SendRequest<Empty<Bytes>>,
}

struct Reply {
    status: StatusCode,
    body: String,
}

async fn client(addr: SocketAddr) -> Client {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    Client { sender }
}

impl Client {
    async fn try_get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, hyper::Error> {
        let mut req = Request::builder().uri(path).header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Empty::new()).unwrap();
        self.sender.ready().await?;
        let res = self.sender.send_request(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    async fn get(&mut self, host: &str, path: &str) -> Reply {
        self.try_get(host, path, &[]).await.unwrap()
    }
}

/// Polls `check` every 5 ms until it holds; panics after `limit`.
async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn requests_are_routed_by_host_with_a_fallback_for_any_host() {
    let (a, b, c) = (server("A").await, server("B").await, server("C").await);
    let (proxy, addr) = proxy().await;
    proxy.set_route(addr, Some("a.test"), table(vec![upstream("1", 0, a.addr)]));
    proxy.set_route(addr, Some("B.test"), table(vec![upstream("1", 0, b.addr)]));
    let mut cl = client(addr).await;
    // Without a route for any host, an unknown host is not found.
    let r = cl.get("other.test", "/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("other.test"), "{}", r.body);
    proxy.set_route(addr, None, table(vec![upstream("1", 0, c.addr)]));
    assert_eq!(cl.get("a.test", "/").await.body, "A");
    assert_eq!(cl.get("b.TEST:8080", "/").await.body, "B");
    assert_eq!(cl.get("other.test", "/").await.body, "C");
    proxy.remove_route(addr, Some("a.test"));
    assert_eq!(cl.get("a.test", "/").await.body, "C");
    // Listening again on the bound address is the same listener.
    assert_eq!(proxy.listen(&addr.to_string()).await.unwrap(), addr);
    proxy.shutdown().await;
}

#[tokio::test]
async fn forwarded_headers_are_set_and_hop_by_hop_headers_removed() {
    let a = server("A").await;
    let (proxy, addr) = proxy().await;
    proxy.set_route(addr, None, table(vec![upstream("1", 0, a.addr)]));
    let mut cl = client(addr).await;
    let r = cl
        .try_get(
            "shop.test:9000",
            "/headers",
            &[
                ("x-forwarded-for", "10.1.2.3"),
                ("x-forwarded-proto", "https"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "secret"),
                ("keep-alive", "timeout=5"),
                ("x-kept", "yes"),
            ],
        )
        .await
        .unwrap();
    let seen: HashMap<&str, &str> = r.body.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(seen["host"], "shop.test:9000");
    assert_eq!(seen["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "shop.test:9000");
    assert_eq!(seen["x-hop"], "-");
    assert_eq!(seen["keep-alive"], "-");
    assert_eq!(seen["x-kept"], "yes");
    proxy.shutdown().await;
}

#[tokio::test]
async fn without_a_ready_replica_the_answer_is_503_and_readiness_moves_traffic() {
    let (a, b) = (server("A").await, server("B").await);
    let (proxy, addr) = proxy().await;
    let (ua, ub) = (upstream("1", 0, a.addr), upstream("1", 1, b.addr));
    ua.set_ready(false);
    ub.set_ready(false);
    proxy.set_route(addr, None, table(vec![ua.clone(), ub.clone()]));
    let mut cl = client(addr).await;
    let r = cl.get("x", "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.body.contains("no ready replica of service web"),
        "{}",
        r.body
    );
    assert_eq!(
        a.hits.load(Ordering::SeqCst) + b.hits.load(Ordering::SeqCst),
        0
    );

    ub.set_ready(true);
    for _ in 0..10 {
        assert_eq!(cl.get("x", "/").await.body, "B");
    }
    ua.set_ready(true);
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(cl.get("x", "/").await.body);
    }
    assert!(seen.iter().any(|s| s == "A") && seen.iter().any(|s| s == "B"));
    ub.set_ready(false);
    for _ in 0..10 {
        assert_eq!(cl.get("x", "/").await.body, "A");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn round_robin_spreads_requests_evenly() {
    let servers = [server("A").await, server("B").await, server("C").await];
    let (proxy, addr) = proxy().await;
    let ups = servers
        .iter()
        .enumerate()
        .map(|(i, s)| upstream("1", i as u32, s.addr))
        .collect();
    proxy.set_route(addr, None, table(ups));
    let mut cl = client(addr).await;
    for _ in 0..30 {
        assert_eq!(cl.get("x", "/").await.status, StatusCode::OK);
    }
    for s in &servers {
        assert_eq!(s.hits.load(Ordering::SeqCst), 10);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn least_in_flight_avoids_a_busy_replica() {
    let (a, b) = (server("A").await, server("B").await);
    let (proxy, addr) = proxy().await;
    let (ua, ub) = (upstream("1", 0, a.addr), upstream("1", 1, b.addr));
    let mut t = table(vec![ua.clone(), ub.clone()]);
    t.balance = Balance::LeastInFlight;
    proxy.set_route(addr, None, t);
    let held = tokio::spawn(async move { client(addr).await.get("x", "/hold").await.body });
    eventually(Duration::from_secs(10), "a held request", || {
        ua.in_flight() + ub.in_flight() == 1
    })
    .await;
    let (busy, idle) = if ua.in_flight() == 1 {
        ("A", "B")
    } else {
        ("B", "A")
    };
    let mut cl = client(addr).await;
    for _ in 0..10 {
        assert_eq!(cl.get("x", "/").await.body, idle);
    }
    a.release.send_replace(true);
    b.release.send_replace(true);
    assert_eq!(held.await.unwrap(), busy);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_canary_gets_its_share_of_clients_and_each_client_stays_on_its_side() {
    let (s, c) = (server("stable").await, server("canary").await);
    let (proxy, addr) = proxy().await;
    let route = |weight: u8| RouteTable {
        service: SERVICE.into(),
        stable: vec![upstream("1", 0, s.addr)],
        canary: Some((vec![upstream("2", 0, c.addr)], weight)),
        sticky: Some(Sticky::Header("x-user".into())),
        balance: Balance::RoundRobin,
    };
    proxy.set_route(addr, None, route(20));
    let mut cl = client(addr).await;
    let users: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let mut side = HashMap::new();
    for u in &users {
        let r = cl.try_get("x", "/", &[("x-user", u)]).await.unwrap();
        side.insert(u.clone(), r.body);
    }
    let on_canary = side.values().filter(|b| *b == "canary").count();
    assert!(
        (100..=300).contains(&on_canary),
        "{on_canary} of 1000 on a 20% canary"
    );
    // Same weight: every client lands where it did.
    for u in users.iter().take(200) {
        let r = cl.try_get("x", "/", &[("x-user", u)]).await.unwrap();
        assert_eq!(r.body, side[u], "{u} changed sides");
    }
    // A higher weight only moves clients from stable to canary.
    proxy.set_route(addr, None, route(60));
    let mut moved = 0;
    for u in users.iter().take(300) {
        let r = cl.try_get("x", "/", &[("x-user", u)]).await.unwrap();
        if side[u] == "canary" {
            assert_eq!(r.body, "canary", "{u} left the canary when the weight rose");
        } else if r.body == "canary" {
            moved += 1;
        }
    }
    assert!(moved > 0);
    // The cookie variant reads the named cookie.
    let mut t = route(50);
    t.sticky = Some(Sticky::Cookie("uid".into()));
    proxy.set_route(addr, None, t);
    let first = cl
        .try_get("x", "/", &[("cookie", "theme=dark; uid=42")])
        .await
        .unwrap()
        .body;
    for _ in 0..20 {
        let r = cl
            .try_get("x", "/", &[("cookie", "uid=42; theme=light")])
            .await
            .unwrap();
        assert_eq!(r.body, first);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_replica() {
    let live = server("live").await;
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
        // dropped: nothing listens there any more
    };
    let (proxy, addr) = proxy().await;
    let mut registry = prometheus_client::registry::Registry::default();
    proxy.register_metrics(&mut registry);
    proxy.set_route(
        addr,
        None,
        table(vec![upstream("1", 0, closed), upstream("1", 1, live.addr)]),
    );
    let mut cl = client(addr).await;
    for _ in 0..20 {
        let r = cl.get("x", "/").await;
        assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "live"));
    }
    assert_eq!(live.hits.load(Ordering::SeqCst), 20);
    let stats = proxy.stats(SERVICE, "1");
    assert_eq!((stats.requests, stats.errors), (20, 0));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let failures = text
        .lines()
        .find(|l| l.starts_with("proxy_upstream_connect_failures_total{") && l.contains("web/1/0"))
        .unwrap_or_else(|| panic!("{text}"));
    let n: u64 = failures.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 10, "{failures}");
    proxy.shutdown().await;
}

/// Answers every request with the head of a 1000-byte body, 5 bytes of it, then a reset.
async fn resetting_server(requests: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let requests = requests.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                requests.fetch_add(1, Ordering::SeqCst);
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nhello")
                    .await;
                let _ = stream.flush().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                // Linger 0: close with a reset rather than a clean end (a zero linger does not
                // block on drop, which is what the deprecation warns about).
                #[allow(deprecated)]
                let _ = stream.set_linger(Some(Duration::ZERO));
                drop(stream);
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_reset_after_the_response_started_is_not_retried() {
    let requests = Arc::new(AtomicU64::new(0));
    let (r1, r2) = (
        resetting_server(requests.clone()).await,
        resetting_server(requests.clone()).await,
    );
    let (proxy, addr) = proxy().await;
    proxy.set_route(
        addr,
        None,
        table(vec![upstream("1", 0, r1), upstream("1", 1, r2)]),
    );
    let mut cl = client(addr).await;
    let result = cl.try_get("x", "/", &[]).await;
    assert!(
        result.is_err(),
        "a cut body must reach the client as an error"
    );
    eventually(Duration::from_secs(10), "the error to be counted", || {
        proxy.stats(SERVICE, "1").errors == 1
    })
    .await;
    assert_eq!(
        requests.load(Ordering::SeqCst),
        1,
        "the request was sent twice"
    );
    assert_eq!(proxy.stats(SERVICE, "1").requests, 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn server_sent_events_stream_through_as_they_come() {
    let a = server("A").await;
    let (proxy, addr) = proxy().await;
    proxy.set_route(addr, None, table(vec![upstream("1", 0, a.addr)]));
    let mut cl = client(addr).await;
    let req = Request::builder()
        .uri("/sse")
        .header("host", "x")
        .body(Empty::new())
        .unwrap();
    let res = cl.sender.send_request(req).await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    // The upstream holds the end of its response until released: the first event must
    // arrive before that.
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the first event did not pass while the response was open")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "data: first\n\n");
    a.release.send_replace(true);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "data: last\n\n");
    proxy.shutdown().await;
}

/// Answers an upgrade with 101 and then echoes every byte.
async fn echo_upgrade_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                if !head.contains("upgrade: echo") || !head.contains("connection: upgrade") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\n",
                    )
                    .await;
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upgraded_connection_echoes_and_is_closed_by_drain_after_the_grace() {
    let echo = echo_upgrade_server().await;
    let (proxy, addr) = proxy().await;
    let u = upstream("1", 0, echo);
    proxy.set_route(addr, None, table(vec![u.clone()]));
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the 101");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    stream.write_all(b"ping through the proxy").await.unwrap();
    let mut echoed = vec![0u8; 22];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, b"ping through the proxy");
    eventually(Duration::from_secs(10), "the upgrade to count", || {
        u.upgraded() == 1
    })
    .await;
    assert_eq!(u.in_flight(), 0);

    // Traffic leaves the version; the drain closes the tunnel after the grace.
    proxy.remove_route(addr, None);
    let report = proxy
        .drain(
            std::slice::from_ref(&u),
            &Drain {
                timeout_ms: 5_000,
                upgrade_grace_ms: 100,
            },
        )
        .await;
    assert_eq!(report.cut_requests, 0);
    assert_eq!(report.closed_upgrades, 1);
    assert!(report.elapsed_ms >= 100, "{report:?}");
    assert_eq!(u.upgraded(), 0);
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("the client side stayed open after the drain");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");

    // The same version switched back to gets upgrades that stay open.
    proxy.set_route(addr, None, table(vec![u.clone()]));
    let mut again = TcpStream::connect(addr).await.unwrap();
    again
        .write_all(b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = again.read(&mut buf).await.unwrap();
        assert!(n > 0);
        head.extend_from_slice(&buf[..n]);
    }
    again.write_all(b"again").await.unwrap();
    let mut echoed = vec![0u8; 5];
    again.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, b"again");
    proxy.shutdown().await;
}

#[tokio::test]
async fn http2_clients_with_prior_knowledge_are_served() {
    let a = server("A").await;
    let (proxy, addr) = proxy().await;
    proxy.set_route(addr, Some("h2.test"), table(vec![upstream("1", 0, a.addr)]));
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for path in ["/", "/headers"] {
        let req = Request::builder()
            .uri(format!("http://h2.test{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.version(), hyper::Version::HTTP_2);
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        if path == "/" {
            assert_eq!(body, "A");
        } else {
            assert!(body.contains("host=h2.test\n"), "{body}");
            assert!(body.contains("x-forwarded-host=h2.test\n"), "{body}");
        }
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn metrics_and_stats_count_requests_by_class_version_and_replica() {
    let (a, b) = (server("A").await, server("B").await);
    let (proxy, addr) = proxy().await;
    let mut registry = prometheus_client::registry::Registry::with_prefix("ouro");
    proxy.register_metrics(&mut registry);
    proxy.set_route(addr, None, table(vec![upstream("1", 0, a.addr)]));
    let mut cl = client(addr).await;
    for _ in 0..3 {
        assert_eq!(cl.get("x", "/").await.status, StatusCode::OK);
    }
    assert_eq!(
        cl.get("x", "/status/500").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    proxy.set_route(addr, None, table(vec![upstream("2", 0, b.addr)]));
    assert_eq!(cl.get("x", "/").await.body, "B");

    let v1 = proxy.stats(SERVICE, "1");
    assert_eq!((v1.requests, v1.errors), (4, 1));
    assert_eq!(v1.latency_buckets.iter().sum::<u64>(), 4);
    let v2 = proxy.stats(SERVICE, "2");
    assert_eq!((v2.requests, v2.errors), (1, 0));
    assert_eq!(proxy.stats(SERVICE, "3").requests, 0);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let has = |line: &str| text.lines().any(|l| l == line);
    let series = r#"service="web",version="1",replica="web/1/0""#;
    assert!(
        has(&format!(
            r#"ouro_proxy_requests_total{{{series},class="2xx"}} 3"#
        )),
        "{text}"
    );
    assert!(
        has(&format!(
            r#"ouro_proxy_requests_total{{{series},class="5xx"}} 1"#
        )),
        "{text}"
    );
    assert!(
        has(&format!(
            r#"ouro_proxy_request_duration_seconds_count{{{series}}} 4"#
        )),
        "{text}"
    );
    assert!(
        has(&format!(r#"ouro_proxy_in_flight{{{series}}} 0"#)),
        "{text}"
    );
    assert!(
        has(
            r#"ouro_proxy_requests_total{service="web",version="2",replica="web/2/0",class="2xx"} 1"#
        ),
        "{text}"
    );

    // Version 1 is stopped: its series leave /metrics, its totals stay.
    proxy.forget(&[upstream("1", 0, a.addr)]);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(!text.contains("web/1/0"), "{text}");
    assert!(text.contains("web/2/0"), "{text}");
    assert_eq!(proxy.stats(SERVICE, "1").requests, 4);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_replica_slower_than_the_request_timeout_gets_504() {
    let a = server("A").await;
    let options = ProxyOptions {
        request_timeout: Duration::from_millis(300),
        ..ProxyOptions::default()
    };
    let (proxy, addr) = proxy_with(options).await;
    let u = upstream("1", 0, a.addr);
    proxy.set_route(addr, None, table(vec![u.clone()]));
    let mut cl = client(addr).await;
    let r = cl.get("x", "/hold").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(r.body.contains("web"), "{}", r.body);
    assert_eq!(u.in_flight(), 0);
    let s = proxy.stats(SERVICE, "1");
    assert_eq!((s.requests, s.errors), (1, 1));
    // The same client connection still works.
    a.release.send_replace(true);
    assert_eq!(cl.get("x", "/").await.body, "A");
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_idle_client_connection_is_closed_after_the_idle_timeout() {
    let options = ProxyOptions {
        client_idle_timeout: Duration::from_millis(200),
        ..ProxyOptions::default()
    };
    let (proxy, addr) = proxy_with(options).await;
    let a = server("A").await;
    proxy.set_route(addr, None, table(vec![upstream("1", 0, a.addr)]));
    // A connection that never sends a request.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the silent connection stayed open");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    // A keep-alive connection after its first request.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle keep-alive connection stayed open");
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with('A'),
        "{got}"
    );
    proxy.shutdown().await;
}

/// Keep-alive clients sending requests back to back until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    loops: Vec<tokio::task::JoinHandle<Vec<Failure>>>,
}

#[derive(Debug)]
struct Failure {
    /// When the request started.
    at: Instant,
    what: String,
}

impl Load {
    /// `clients` connections; client `i` sends `x-user: user-i` (canary stickiness).
    async fn start(addr: SocketAddr, clients: usize, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let mut loops = Vec::new();
        for i in 0..clients {
            let (stop, ok) = (stop.clone(), ok.clone());
            loops.push(tokio::spawn(async move {
                let user = format!("user-{i}");
                let mut cl = client(addr).await;
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    match cl.try_get("x", path, &[("x-user", &user)]).await {
                        Ok(r) if r.status == StatusCode::OK => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => failures.push(Failure {
                            at,
                            what: format!("{} {}", r.status, r.body.trim()),
                        }),
                        Err(e) => {
                            failures.push(Failure {
                                at,
                                what: format!("connection error: {e}"),
                            });
                            // A broken connection cannot send more; the failure is recorded.
                            break;
                        }
                    }
                }
                failures
            }));
        }
        let load = Load { stop, ok, loops };
        load.wait_for_more(20).await;
        load
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `n` more requests succeeded.
    async fn wait_for_more(&self, n: u64) {
        let target = self.ok() + n;
        eventually(Duration::from_secs(10), "load to pass", || {
            self.ok() >= target
        })
        .await;
    }

    async fn stop(self) -> Vec<Failure> {
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for l in self.loops {
            failures.extend(l.await.unwrap());
        }
        failures
    }
}

fn upstreams(version: &str, servers: &[TestServer]) -> Vec<Arc<Upstream>> {
    servers
        .iter()
        .enumerate()
        .map(|(i, s)| upstream(version, i as u32, s.addr))
        .collect()
}

/// Blue-green as the strategy does it, 20 times each way, under a steady keep-alive load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_switches_each_way_under_load_fail_no_request() {
    let blue = [server("blue").await, server("blue").await];
    let green = [server("green").await, server("green").await];
    let (proxy, addr) = proxy().await;
    let (blue_ups, green_ups) = (upstreams("blue", &blue), upstreams("green", &green));
    proxy.set_route(addr, None, table(blue_ups.clone()));
    let load = Load::start(addr, 4, "/jitter").await;

    let drain = Drain {
        timeout_ms: 10_000,
        upgrade_grace_ms: 100,
    };
    let mut checker = client(addr).await;
    for i in 0..40 {
        let (to, from, name) = if i % 2 == 0 {
            (&green_ups, &blue_ups, "green")
        } else {
            (&blue_ups, &green_ups, "blue")
        };
        proxy.set_route(addr, None, table(to.clone()));
        // Every request after the switch goes to the new version.
        for _ in 0..3 {
            assert_eq!(checker.get("x", "/").await.body, name, "switch {i}");
        }
        let report = proxy.drain(from, &drain).await;
        assert_eq!(report.cut_requests, 0, "switch {i}: {report:?}");
        assert!(from.iter().all(|u| u.in_flight() == 0));
        load.wait_for_more(10).await;
    }
    let ok = load.ok();
    let failures = load.stop().await;
    assert!(failures.is_empty(), "{failures:?}");
    let served: u64 = blue
        .iter()
        .chain(green.iter())
        .map(|s| s.hits.load(Ordering::SeqCst))
        .sum();
    assert!(served >= ok);
    assert!(green.iter().all(|s| s.hits.load(Ordering::SeqCst) > 0));
    proxy.shutdown().await;
}

/// Canary steps up to 100 and a rollback, 5 times, under load from sticky clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_steps_and_rollbacks_under_load_fail_no_request() {
    let old = [server("old").await, server("old").await];
    let new = [server("new").await, server("new").await];
    let (proxy, addr) = proxy().await;
    let (old_ups, new_ups) = (upstreams("1", &old), upstreams("2", &new));
    let route = |weight: u8| RouteTable {
        service: SERVICE.into(),
        stable: old_ups.clone(),
        canary: Some((new_ups.clone(), weight)),
        sticky: Some(Sticky::Header("x-user".into())),
        balance: Balance::LeastInFlight,
    };
    proxy.set_route(addr, None, table(old_ups.clone()));
    let load = Load::start(addr, 8, "/jitter").await;
    for _ in 0..5 {
        for weight in [10, 25, 50, 100] {
            proxy.set_route(addr, None, route(weight));
            load.wait_for_more(10).await;
        }
        // Rollback: everything back on the old version.
        proxy.set_route(addr, None, table(old_ups.clone()));
        load.wait_for_more(10).await;
    }
    let failures = load.stop().await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(new.iter().all(|s| s.hits.load(Ordering::SeqCst) > 0));
    let (s1, s2) = (proxy.stats(SERVICE, "1"), proxy.stats(SERVICE, "2"));
    assert_eq!(s1.errors + s2.errors, 0);
    assert!(s2.requests > 0);
    proxy.shutdown().await;
}

/// A replica's server that can be killed: its listener and every connection close at once.
async fn killable_server(name: &'static str) -> (SocketAddr, tokio::task::AbortHandle) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        // Connections run inside this task, so aborting it closes them all.
        let mut conns = tokio::task::JoinSet::new();
        let (_release, rx) = watch::channel(true);
        loop {
            tokio::select! {
                Ok((stream, _)) = listener.accept() => {
                    let rx = rx.clone();
                    conns.spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let rx = rx.clone();
                            async move { Ok::<_, Infallible>(answer(name, req, rx).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Some(_) = conns.join_next() => {}
            }
        }
    });
    (addr, task.abort_handle())
}

/// A replica dies under load. Its port refuses connections, so new requests are retried on the
/// other replicas; only requests that had already reached it can fail (as 502, never as a broken
/// client connection), and none once readiness has taken it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_breaks_no_client_connection() {
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(killable_server("web").await);
    }
    let (proxy, addr) = proxy().await;
    let ups: Vec<Arc<Upstream>> = servers
        .iter()
        .enumerate()
        .map(|(i, (a, _))| upstream("1", i as u32, *a))
        .collect();
    proxy.set_route(addr, None, table(ups.clone()));
    let clients = 4;
    let load = Load::start(addr, clients, "/jitter").await;
    servers[0].1.abort();
    // The health probe notices after a while; until then the proxy still picks the replica.
    load.wait_for_more(50).await;
    ups[0].set_ready(false);
    let out = Instant::now();
    load.wait_for_more(200).await;
    let failures = load.stop().await;
    eprintln!(
        "requests that had reached the killed replica: {}",
        failures.len()
    );
    // A connection error would mean the proxy broke a client connection.
    assert!(
        failures.iter().all(|f| f.what.starts_with("502")),
        "{failures:?}"
    );
    assert!(failures.iter().all(|f| f.at < out), "{failures:?}");
    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    proxy.register_metrics(&mut registry);
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("proxy_upstream_connect_failures_total{")
                && l.contains("web/1/0")
                && !l.ends_with(" 0")),
        "{text}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_request_head_over_the_limit_gets_431() {
    let a = server("A").await;
    let (proxy, addr) = proxy().await;
    proxy.set_route(addr, None, table(vec![upstream("1", 0, a.addr)]));
    let mut cl = client(addr).await;
    let big = "x".repeat(80 * 1024);
    let r = cl.try_get("x", "/", &[("x-big", &big)]).await.unwrap();
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(a.hits.load(Ordering::SeqCst), 0);
    // Below the limit passes.
    let mut cl = client(addr).await;
    let fine = "x".repeat(16 * 1024);
    let r = cl.try_get("x", "/", &[("x-big", &fine)]).await.unwrap();
    assert_eq!(r.body, "A");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_request_body_streams_to_the_replica_before_it_ends() {
    let a = server("A").await;
    let (proxy, addr) = proxy().await;
    proxy.set_route(addr, None, table(vec![upstream("1", 0, a.addr)]));
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, Infallible>>();
    let req = Request::builder()
        .method("POST")
        .uri("/first-chunk")
        .header("host", "x")
        .body(StreamBody::new(rx))
        .unwrap();
    tx.unbounded_send(Ok(Frame::data(Bytes::from("part one"))))
        .unwrap();
    // The body is still open: the answer can only come if the first part already went through.
    let res = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("the request body was held back")
        .unwrap();
    let mut body = res.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("no response body")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "part one");
    drop(tx);
    proxy.shutdown().await;
}

/// A replica that answers one request per connection and then closes it (without saying so in
/// the response), counting its connections.
async fn one_shot_replica() -> (SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let (a, c) = (accepted.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                let _ = stream.shutdown().await;
                drop(stream);
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, accepted, closed)
}

#[tokio::test]
async fn a_pooled_connection_the_replica_closed_between_requests_is_not_used_again() {
    let (replica, accepted, closed) = one_shot_replica().await;
    let (proxy, addr) = proxy().await;
    proxy.set_route(addr, None, table(vec![upstream("1", 0, replica)]));
    let mut cl = client(addr).await;
    for i in 1..=5u64 {
        let r = cl.get("x", "/").await;
        assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ok"));
        eventually(Duration::from_secs(10), "the replica closing", || {
            closed.load(Ordering::SeqCst) == i
        })
        .await;
        // The proxy learns of the close from its connection's read side; give it that chance
        // (the request after it must then go over a new connection, not fail).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
    let stats = proxy.stats(SERVICE, "1");
    assert_eq!((stats.requests, stats.errors), (5, 0));
    proxy.shutdown().await;
}

#[tokio::test]
async fn when_a_replica_stops_being_ready_or_routed_a_keep_alive_client_goes_elsewhere() {
    let (a, b) = (server("A").await, server("B").await);
    let (proxy, addr) = proxy().await;
    let (ua, ub) = (upstream("1", 0, a.addr), upstream("1", 1, b.addr));
    proxy.set_route(addr, None, table(vec![ua.clone()]));
    let mut cl = client(addr).await;
    assert_eq!(cl.get("x", "/").await.body, "A");
    proxy.set_route(addr, None, table(vec![ua.clone(), ub.clone()]));
    ua.set_ready(false);
    for _ in 0..10 {
        assert_eq!(cl.get("x", "/").await.body, "B");
    }
    // A is ready again but a switch took it out of the route.
    ua.set_ready(true);
    proxy.set_route(addr, None, table(vec![ub.clone()]));
    for _ in 0..10 {
        assert_eq!(cl.get("x", "/").await.body, "B");
    }
    assert_eq!(a.hits.load(Ordering::SeqCst), 1);
    let stats = proxy.stats(SERVICE, "1");
    assert_eq!((stats.requests, stats.errors), (21, 0));
    proxy.shutdown().await;
}
