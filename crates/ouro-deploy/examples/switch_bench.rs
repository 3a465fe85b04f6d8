//! Blue-green switch and rollback timings on the local target (issue 8, section 9): a real
//! small HTTP service (python3, two replicas per version) behind the built-in proxy, a
//! keep-alive client sending requests back to back, and N rounds of "deploy the other version,
//! then roll back". Prints, per round, the time from "new version ready" to the first request
//! after which every request is answered by the new version, and the time a rollback to the
//! still-warm version takes (the strategy's whole run: start (already running), ready, switch,
//! drain).
//!
//! `cargo run --release -p ouro-deploy --example switch_bench -- [ROUNDS]` (bench/deploy/run.sh)

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ouro_deploy::local::{Supervisor, SupervisorOptions};
use ouro_deploy::local_target::LocalTarget;
use ouro_deploy::proxy::Proxy;
use ouro_deploy::spec::{
    Drain, Health, Port, Probe, ProbeCheck, Resources, Route, Service, Stop, Strategy,
};
use ouro_deploy::strategy::{self, Moved, Options, ServicePlan, Steps};
use ouro_deploy::target::{Target, VersionSpec};
use ouro_release::bundle::{self, FORMAT, Manifest, ManifestFile};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const APP: &str = r#"import os, http.server, socketserver
VERSION = open("VERSION").read().strip()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes: without TCP_NODELAY the second waits for the
    # proxy's delayed ACK (about 40 ms a request).
    disable_nagle_algorithm = True
    def do_GET(self):
        body = VERSION.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
S(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// Remembers when the `ready` step of a run finished.
#[derive(Default)]
struct ReadyAt(Mutex<Option<Instant>>);

impl Steps for ReadyAt {
    fn record<'a>(
        &'a self,
        _service: &'a str,
        name: &'a str,
        _ok: bool,
        _detail: Value,
        _started_at: i64,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if name == "ready" {
                *self.0.lock().unwrap() = Some(Instant::now());
            }
        })
    }
}

fn write_bundle(path: &Path, key: &ouro_release::signing::SigningKey, version: &str) {
    let version_file = format!("{version}\n");
    let mut files: Vec<(&str, &[u8])> = vec![
        ("VERSION", version_file.as_bytes()),
        ("app.py", APP.as_bytes()),
    ];
    files.sort_by(|a, b| a.0.cmp(b.0));
    let manifest = Manifest {
        format: FORMAT,
        project: "bench".into(),
        version: version.into(),
        tag: format!("v{version}"),
        sha: "0".repeat(40),
        created_at: 0,
        files: files
            .iter()
            .map(|(p, c)| ManifestFile {
                path: p.to_string(),
                sha256: hex::encode(Sha256::digest(c)),
                size: c.len() as u64,
            })
            .collect(),
    };
    let mut out = fs::File::create(path).expect("bundle file");
    bundle::write(
        &mut out,
        &manifest,
        files.iter().map(|(p, c)| (p.to_string(), *c)),
        key,
    )
    .expect("write bundle");
}

fn service() -> Service {
    let probe = Probe {
        check: ProbeCheck::Http {
            path: "/healthz".into(),
        },
        interval_ms: 100,
        timeout_ms: 1000,
        success_threshold: 1,
        failure_threshold: 1,
        start_period_ms: 0,
    };
    Service {
        name: "web".into(),
        run: "exec python3 app.py".into(),
        port: Port::Auto,
        replicas: 2,
        health: Health {
            readiness: Some(probe),
            liveness: None,
        },
        stop: Stop::default(),
        routes: BTreeMap::from([(
            "staging".to_string(),
            Route {
                listen: Some("127.0.0.1:0".into()),
                host: None,
            },
        )]),
        strategy: Strategy::BlueGreen {
            keep_warm_ms: 3_600_000,
        },
        drain: Drain::default(),
        resources: Resources::default(),
        env: BTreeMap::new(),
    }
}

/// Sends GET / back to back on one keep-alive connection; records (sent at, version).
async fn client(addr: String, log: Arc<Mutex<Vec<(Instant, String)>>>, stop: Arc<Mutex<bool>>) {
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stream.set_nodelay(true).ok();
    let mut rd = BufReader::new(stream);
    while !*stop.lock().unwrap() {
        let sent = Instant::now();
        rd.get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            .await
            .expect("write");
        let mut len = 0usize;
        let mut status = String::new();
        rd.read_line(&mut status).await.expect("status");
        assert!(status.contains(" 200 "), "{status}");
        loop {
            let mut line = String::new();
            rd.read_line(&mut line).await.expect("header");
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().expect("length");
            }
        }
        let mut body = vec![0; len];
        rd.read_exact(&mut body).await.expect("body");
        log.lock()
            .unwrap()
            .push((sent, String::from_utf8_lossy(&body).into_owned()));
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = ouro_release::signing::load_or_create(dir.path()).expect("key");
    let versions = ["1.0.0", "1.1.0"];
    for v in versions {
        write_bundle(&dir.path().join(format!("{v}.tar.zst")), &key, v);
    }
    let sup = Supervisor::new(
        dir.path().join("deploy"),
        SupervisorOptions {
            trusted_key: Some(key.verifying_key()),
            ..SupervisorOptions::default()
        },
    );
    let proxy = Proxy::new(Default::default());
    let target = LocalTarget::new(sup.clone(), proxy.clone(), "127.0.0.1:0".into());
    let svc = service();
    let route = svc.routes["staging"].clone();
    let spec = |v: &str| VersionSpec {
        project: "bench".into(),
        environment: "staging".into(),
        service: svc.clone(),
        version: v.into(),
        bundle: dir.path().join(format!("{v}.tar.zst")),
        env: BTreeMap::new(),
    };
    let opts = Options::default();
    let first = spec(versions[0]);
    let plan = ServicePlan {
        new: &first,
        old: None,
        route: &route,
        strategy: None,
    };
    assert!(matches!(
        strategy::run(&target, &ReadyAt::default(), &plan, &opts).await,
        Moved::Live { .. }
    ));
    let addr = target.endpoint("bench/staging", "web").expect("routed");
    let log = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(Mutex::new(false));
    let load = tokio::spawn(client(addr.clone(), log.clone(), stop.clone()));

    let mut to_all_new = Vec::new();
    let mut rollback = Vec::new();
    let mut live = 0;
    for _ in 0..rounds {
        let (old, new) = (versions[live], versions[1 - live]);
        // Deploy the other version (the first time it starts; later it is warm).
        let s = spec(new);
        let steps = ReadyAt::default();
        let plan = ServicePlan {
            new: &s,
            old: Some(old),
            route: &route,
            strategy: None,
        };
        assert!(matches!(
            strategy::run(&target, &steps, &plan, &opts).await,
            Moved::Live { .. }
        ));
        let ready = steps.0.lock().unwrap().expect("ready step");
        tokio::time::sleep(Duration::from_millis(100)).await;
        {
            // The first request sent after `ready` from which on every answer is `new`.
            let l = log.lock().unwrap();
            let last_old = l.iter().rposition(|(_, v)| v == old);
            let first_all_new = l
                .iter()
                .enumerate()
                .find(|(i, (t, v))| *t >= ready && v == new && last_old.is_none_or(|o| *i > o))
                .map(|(_, (t, _))| *t)
                .expect("requests after the switch");
            to_all_new.push(first_all_new.duration_since(ready).as_secs_f64() * 1000.0);
        }
        // Roll back to the warm old version, timed as a whole.
        let back = spec(old);
        let plan = ServicePlan {
            new: &back,
            old: Some(new),
            route: &route,
            strategy: Some(Strategy::BlueGreen {
                keep_warm_ms: 3_600_000,
            }),
        };
        let t = Instant::now();
        assert!(matches!(
            strategy::run(&target, &ReadyAt::default(), &plan, &opts).await,
            Moved::Live { .. }
        ));
        rollback.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = &mut live;
    }
    *stop.lock().unwrap() = true;
    let _ = load.await;
    let served = log.lock().unwrap().len();
    for v in versions {
        let _ = target.stop("bench/staging", "web", v).await;
    }
    println!(
        "rounds: {rounds}, requests served: {served} (no failure: the client stops at the first)"
    );
    println!(
        "ready -> all new requests on the new version: p50 {:.2} ms, max {:.2} ms",
        percentile(&mut to_all_new.clone(), 0.5),
        percentile(&mut to_all_new, 1.0)
    );
    println!(
        "rollback to the warm version (whole strategy run): p50 {:.2} ms, max {:.2} ms",
        percentile(&mut rollback.clone(), 0.5),
        percentile(&mut rollback, 1.0)
    );
}
