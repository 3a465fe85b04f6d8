//! The proxy's HTTP/1.1 fast path byte for byte: a scripted replica and a raw client, for the
//! framings and connection rules a library client would hide (chunked bodies passed through,
//! bodies ending at the close, informational responses, HEAD, pipelining, `Connection: close`,
//! and a connection handed to hyper at its first request with a body).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ouro_deploy::proxy::{Balance, Proxy, ProxyOptions, RouteTable};
use ouro_deploy::upstream::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHUNKED: &str = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nx-sum: 11\r\n\r\n";

/// What the scripted replica saw: its connections and each request head and body.
#[derive(Default)]
struct Seen {
    connections: usize,
    requests: Vec<(String, Vec<u8>)>,
}

/// A keep-alive HTTP/1.1 replica answering by path with fixed bytes.
async fn scripted_replica() -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            s.lock().unwrap().connections += 1;
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some((head, path, length)) = read_request(&mut stream, &mut buf).await
                    else {
                        return;
                    };
                    while buf.len() < length {
                        let mut more = [0u8; 4096];
                        match stream.read(&mut more).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&more[..n]),
                        }
                    }
                    let body: Vec<u8> = buf.drain(..length).collect();
                    s.lock().unwrap().requests.push((head, body.clone()));
                    let answer: Vec<u8> = match path.as_str() {
                        "/chunked" => CHUNKED.into(),
                        "/close" => "HTTP/1.1 200 OK\r\n\r\nuntil the close".into(),
                        "/early" => "HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".into(),
                        "/head" => "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n".into(),
                        "/echo" => {
                            let mut a = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
                            a.extend_from_slice(&body);
                            a
                        }
                        p => format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{p}", p.len()).into(),
                    };
                    if stream.write_all(&answer).await.is_err() {
                        return;
                    }
                    if path == "/close" {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// The next request head in `buf` (reading more as needed): the head as text, its path and its
/// body's length; the head is removed from `buf`.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, String, usize)> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = req.parse(buf) {
            let path = req.path.unwrap().to_string();
            let length = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map_or(0, |h| {
                    std::str::from_utf8(h.value)
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap()
                });
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            buf.drain(..n);
            return Some((head, path, length));
        }
        let mut more = [0u8; 4096];
        match stream.read(&mut more).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&more[..n]),
        }
    }
}

async fn proxy_to(replica: SocketAddr) -> (Proxy, SocketAddr) {
    let proxy = Proxy::new(ProxyOptions::default());
    let addr = proxy.listen("127.0.0.1:0").await.unwrap();
    let up = Upstream::new("web", "1", 0, replica);
    up.set_ready(true);
    proxy.set_route(addr, None, web(up));
    (proxy, addr)
}

/// Service `web` on one replica.
fn web(replica: Arc<Upstream>) -> RouteTable {
    RouteTable {
        service: "web".into(),
        stable: vec![replica],
        canary: None,
        sticky: None,
        balance: Balance::RoundRobin,
    }
}

/// A response as the client got it: the head's lines and the body's bytes as sent.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A raw client connection with what it read but did not use yet.
struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    async fn connect(addr: SocketAddr) -> RawClient {
        RawClient {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &str) {
        self.stream.write_all(bytes.as_bytes()).await.unwrap();
    }

    /// Reads until `done(buf)` holds; false at the end of the connection.
    async fn fill(&mut self, done: impl Fn(&[u8]) -> bool) -> bool {
        while !done(&self.buf) {
            let mut more = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut more))
                .await
                .expect("no answer within 10 s")
                .unwrap();
            if n == 0 {
                return false;
            }
            self.buf.extend_from_slice(&more[..n]);
        }
        true
    }

    /// One response; `head_request` when it answers a HEAD (no body whatever it says).
    async fn response(&mut self, head_request: bool) -> Raw {
        self.fill(|b| b.windows(4).any(|w| w == b"\r\n\r\n")).await;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = res.parse(&self.buf) else {
            panic!("not a response: {:?}", String::from_utf8_lossy(&self.buf));
        };
        let status = res.code.unwrap();
        let headers: Vec<(String, String)> = res
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        self.buf.drain(..n);
        let mut raw = Raw {
            status,
            headers,
            body: Vec::new(),
        };
        let end = if head_request {
            0
        } else if let Some(len) = raw.header("content-length") {
            let len: usize = len.parse().unwrap();
            self.fill(|b| b.len() >= len).await;
            len
        } else if raw.header("transfer-encoding").is_some() {
            // The scripted chunked body ends with its trailer line and an empty line.
            self.fill(|b| b.windows(4).any(|w| w == b"\r\n\r\n")).await;
            self.buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4
        } else {
            assert!(!self.fill(|_| false).await);
            self.buf.len()
        };
        raw.body = self.buf.drain(..end).collect();
        raw
    }

    /// Whether the proxy closed the connection (within 10 s).
    async fn closed(&mut self) -> bool {
        !self.fill(|_| false).await
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n")
}

#[tokio::test]
async fn a_chunked_body_passes_through_unchanged_and_both_connections_are_kept() {
    let (replica, seen) = scripted_replica().await;
    let (proxy, addr) = proxy_to(replica).await;
    let mut cl = RawClient::connect(addr).await;
    cl.send(&get("/chunked")).await;
    let r = cl.response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("trailer"), Some("x-sum"));
    let body_at = CHUNKED.find("\r\n\r\n").unwrap() + 4;
    assert_eq!(String::from_utf8(r.body).unwrap(), &CHUNKED[body_at..]);
    cl.send(&get("/after")).await;
    let r = cl.response(false).await;
    assert_eq!(r.body, b"/after");
    assert_eq!(
        seen.lock().unwrap().connections,
        1,
        "the replica connection was not kept"
    );
    let stats = proxy.stats("web", "1");
    assert_eq!((stats.requests, stats.errors), (2, 0));
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_body_that_ends_at_the_replicas_close_ends_the_client_connection_too() {
    let (replica, _) = scripted_replica().await;
    let (proxy, addr) = proxy_to(replica).await;
    let mut cl = RawClient::connect(addr).await;
    cl.send(&get("/close")).await;
    let r = cl.response(false).await;
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.body, b"until the close");
    assert_eq!(proxy.stats("web", "1").errors, 0);
    // A new connection works as before.
    let mut cl = RawClient::connect(addr).await;
    cl.send(&get("/a")).await;
    assert_eq!(cl.response(false).await.body, b"/a");
    proxy.shutdown().await;
}

#[tokio::test]
async fn informational_responses_are_skipped_and_a_head_answer_has_no_body() {
    let (replica, seen) = scripted_replica().await;
    let (proxy, addr) = proxy_to(replica).await;
    let mut cl = RawClient::connect(addr).await;
    cl.send(&get("/early")).await;
    let r = cl.response(false).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    cl.send("HEAD /head HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let r = cl.response(true).await;
    assert_eq!(r.header("content-length"), Some("10"));
    // Had the proxy waited for ten body bytes, this request would not be answered.
    cl.send(&get("/next")).await;
    assert_eq!(cl.response(false).await.body, b"/next");
    assert_eq!(seen.lock().unwrap().connections, 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_close_is_honoured() {
    let (replica, _) = scripted_replica().await;
    let (proxy, addr) = proxy_to(replica).await;
    let mut cl = RawClient::connect(addr).await;
    cl.send(&format!(
        "{}{}GET /c HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        get("/a"),
        get("/b")
    ))
    .await;
    assert_eq!(cl.response(false).await.body, b"/a");
    assert_eq!(cl.response(false).await.body, b"/b");
    let last = cl.response(false).await;
    assert_eq!(last.body, b"/c");
    assert_eq!(last.header("connection"), Some("close"));
    assert!(
        cl.closed().await,
        "the proxy kept a connection the client asked to close"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_connection_goes_to_hyper_at_its_first_request_with_a_body() {
    let (replica, seen) = scripted_replica().await;
    let (proxy, addr) = proxy_to(replica).await;
    let mut cl = RawClient::connect(addr).await;
    cl.send(&get("/before")).await;
    assert_eq!(cl.response(false).await.body, b"/before");
    cl.send("POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
        .await;
    let r = cl.response(false).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    cl.send(&get("/after")).await;
    assert_eq!(cl.response(false).await.body, b"/after");
    let requests = seen.lock().unwrap().requests.clone();
    let heads: Vec<&str> = requests.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(heads.len(), 3);
    assert_eq!(requests[1].1, b"hello");
    // Both paths rewrite the head the same way.
    for head in heads {
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("x-forwarded-for: 127.0.0.1\r\n"), "{head}");
        assert!(lower.contains("x-forwarded-proto: http\r\n"), "{head}");
        assert!(lower.contains("x-forwarded-host: x\r\n"), "{head}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_fast_path_rewrites_forwarding_and_hop_by_hop_headers() {
    let (replica, seen) = scripted_replica().await;
    let (proxy, addr) = proxy_to(replica).await;
    let mut cl = RawClient::connect(addr).await;
    cl.send(concat!(
        "GET /h HTTP/1.1\r\nHost: app.test:8080\r\nConnection: keep-alive, X-Hop\r\n",
        "X-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\n",
        "X-Forwarded-Proto: https\r\nX-Kept: yes\r\n\r\n"
    ))
    .await;
    assert_eq!(cl.response(false).await.body, b"/h");
    let head = seen.lock().unwrap().requests[0].0.clone();
    assert!(head.starts_with("GET /h HTTP/1.1\r\n"), "{head}");
    let lines: Vec<String> = head
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.to_ascii_lowercase())
        .collect();
    let mut lines = lines;
    lines.sort();
    assert_eq!(
        lines,
        [
            "host: app.test:8080",
            "x-forwarded-for: 10.0.0.1, 127.0.0.1",
            "x-forwarded-host: app.test:8080",
            "x-forwarded-proto: http",
            "x-kept: yes",
        ]
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_proxys_own_answer_to_a_head_request_has_no_body() {
    let (replica, _) = scripted_replica().await;
    let (proxy, addr) = proxy_to(replica).await;
    // Never ready: the proxy answers 503 itself.
    let down = Upstream::new("web", "2", 0, replica);
    proxy.set_route(addr, Some("down.test"), web(down));
    let mut cl = RawClient::connect(addr).await;
    for (host, status) in [("down.test", 503), ("x", 200)] {
        cl.send(&format!("HEAD /head HTTP/1.1\r\nhost: {host}\r\n\r\n"))
            .await;
        let r = cl.response(true).await;
        assert_eq!(r.status, status);
    }
    // A body after either head would be read here as the next response.
    cl.send(&get("/next")).await;
    let r = cl.response(false).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"/next"[..]));
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_request_with_two_host_headers_gets_400_and_reaches_no_replica_on_either_path() {
    let (replica, seen) = scripted_replica().await;
    let (proxy, addr) = proxy_to(replica).await;
    // The direct path (no body) and hyper's (a body) answer alike and close the connection.
    for request in [
        "GET /a HTTP/1.1\r\nhost: x\r\nhost: y\r\n\r\n",
        "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nhost: y\r\n\r\nhi",
    ] {
        let mut cl = RawClient::connect(addr).await;
        cl.send(request).await;
        let r = cl.response(false).await;
        assert_eq!(r.status, 400, "{request}");
        assert_eq!(r.header("connection"), Some("close"), "{request}");
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "the request has more than one Host header\n"
        );
        assert!(cl.closed().await, "{request}");
    }
    assert!(seen.lock().unwrap().requests.is_empty());
    let stats = proxy.stats("web", "1");
    assert_eq!((stats.requests, stats.errors), (0, 0));
    proxy.shutdown().await;
}
