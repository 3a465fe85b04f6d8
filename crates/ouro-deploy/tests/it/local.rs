//! The local target's supervisor with a real small HTTP service (a python3 script shipped in a
//! signed release bundle): unpacking, replicas with their port, env and limits, probes, crash
//! backoff and the start limit, stopping, logs, and recovery after an Ouro restart.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ouro_deploy::local::unpack::unpack;
use ouro_deploy::local::{LogStream, Supervisor, SupervisorOptions};
use ouro_deploy::spec::{
    Drain, Health, Port, Probe, ProbeCheck, Resources, Service, Stop, Strategy,
};
use ouro_deploy::target::{TargetError, VersionSpec};
use ouro_release::bundle::{self, FORMAT, Manifest, ManifestFile};
use ouro_release::signing::SigningKey;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) const APP: &str = r#"
import os, sys, signal, resource, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

ctrl = os.environ["CTRL"]
replica = os.environ["OURO_REPLICA"]
version = os.environ["OURO_VERSION"]

def flag(name):
    return (os.path.exists(os.path.join(ctrl, name))
            or os.path.exists(os.path.join(ctrl, name + "-" + replica))
            or os.path.exists(os.path.join(ctrl, name + "-v" + version)))

if flag("crash"):
    print("crashing on purpose", file=sys.stderr, flush=True)
    sys.exit(3)

if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = os.fork()
    if child == 0:
        while True:
            time.sleep(1)
    with open(os.path.join(ctrl, "child-" + replica), "w") as f:
        f.write(str(child))

nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200
        if self.path == "/healthz":
            if flag("unhealthy"):
                code, body = 503, b"unhealthy\n"
            else:
                open(os.path.join(ctrl, "healthy-seen-" + replica), "w").close()
                body = b"ok\n"
        else:
            body = ("version=%s replica=%s pid=%d greeting=%s secret=%s nofile=%d service=%s env=%s\n" % (
                version, replica, os.getpid(), os.environ.get("GREETING", ""), os.environ.get("SECRET", ""),
                nofile, os.environ.get("OURO_SERVICE"), os.environ.get("OURO_ENVIRONMENT"))).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass

if os.environ.get("HTTP11"):
    # Keep-alive towards the proxy, as most real services answer; headers and body are two
    # writes, so without TCP_NODELAY each response waits for the proxy's delayed ACK.
    H.protocol_version = "HTTP/1.1"
    H.disable_nagle_algorithm = True

if os.environ.get("SPAM"):
    # One write, so a rotation can never fall in the middle of it.
    sys.stdout.write("".join("spam line %d\n" % i for i in range(int(os.environ["SPAM"]))))
    sys.stdout.flush()

srv = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
print("listening on %s as replica %s" % (os.environ["PORT"], replica), flush=True)
print("stderr hello from %s" % replica, file=sys.stderr, flush=True)
srv.serve_forever()
"#;

/// Kills every replica a test recorded under its root, whatever happened in the test.
pub(crate) struct Cleanup {
    root: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for state in find_files(&self.root, "state.json") {
            let Ok(v) = fs::read(&state).map_err(|e| e.to_string()).and_then(|b| {
                serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string())
            }) else {
                continue;
            };
            let pid = v["pid"].as_u64().unwrap_or(0) as i32;
            let start = v["start_time"].as_u64().unwrap_or(0);
            if pid > 1 && stat(pid as u32).is_some_and(|(_, s)| s == start) {
                // SAFETY: kill(2) on a process group this test started.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
        }
    }
}

pub(crate) fn find_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(find_files(&p, name));
        } else if e.file_name() == name {
            out.push(p);
        }
    }
    out
}

/// (state, start time) of a process.
fn stat(pid: u32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.first()?.chars().next()?, f.get(19)?.parse().ok()?))
}

fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(s, _)| s != 'Z' && s != 'X')
}

pub(crate) struct World {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) key: SigningKey,
    pub(crate) ctrl: PathBuf,
    pub(crate) bundle: PathBuf,
}

impl World {
    pub(crate) fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctrl = dir.path().join("ctrl");
        fs::create_dir_all(&ctrl).expect("ctrl dir");
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let bundle = dir.path().join("web-1.0.0.tar.zst");
        write_bundle(&bundle, &key, "1.0.0", &[("app.py", APP.as_bytes())]);
        World {
            dir,
            key,
            ctrl,
            bundle,
        }
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.dir.path().join("deploy")
    }

    pub(crate) fn cleanup(&self) -> Cleanup {
        Cleanup { root: self.root() }
    }

    pub(crate) fn supervisor(&self, options: SupervisorOptions) -> Arc<Supervisor> {
        Supervisor::new(
            self.root(),
            SupervisorOptions {
                trusted_key: Some(self.key.verifying_key()),
                ..options
            },
        )
    }

    pub(crate) fn spec(&self, service: Service) -> VersionSpec {
        VersionSpec {
            project: "shop".into(),
            environment: "staging".into(),
            service,
            version: "1.0.0".into(),
            bundle: self.bundle.clone(),
            env: BTreeMap::from([
                ("SECRET".to_string(), "s3cret".to_string()),
                ("CTRL".to_string(), self.ctrl.display().to_string()),
            ]),
        }
    }

    pub(crate) fn touch(&self, name: &str) {
        fs::write(self.ctrl.join(name), b"").expect("touch");
    }

    pub(crate) fn remove(&self, name: &str) {
        fs::remove_file(self.ctrl.join(name)).expect("rm");
    }
}

pub(crate) fn quick() -> SupervisorOptions {
    SupervisorOptions {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_secs(1),
        start_limit: 3,
        start_window: Duration::from_secs(60),
        poll_interval: Duration::from_millis(50),
        ..SupervisorOptions::default()
    }
}

pub(crate) fn write_bundle(path: &Path, key: &SigningKey, version: &str, files: &[(&str, &[u8])]) {
    let mut files = files.to_vec();
    files.sort_by(|a, b| a.0.cmp(b.0));
    let manifest = Manifest {
        format: FORMAT,
        project: "shop".into(),
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

/// A bundle with raw entry names (the tar crate's builder refuses `..`), for hostile bundles.
fn write_raw_bundle(path: &Path, entries: &[(&[u8], &[u8])]) {
    let enc = zstd::stream::write::Encoder::new(fs::File::create(path).expect("file"), 3)
        .expect("encoder");
    let mut tar = tar::Builder::new(enc);
    for (name, data) in entries {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.append(&h, *data).expect("append");
    }
    let enc = tar.into_inner().expect("tar");
    enc.finish().expect("zstd").flush().expect("flush");
}

pub(crate) fn service(replicas: u32) -> Service {
    Service {
        name: "web".into(),
        run: "exec python3 app.py".into(),
        port: Port::Auto,
        replicas,
        health: Health::default(),
        stop: Stop {
            signal: "TERM".into(),
            grace_ms: 10_000,
        },
        routes: BTreeMap::new(),
        strategy: Strategy::Recreate,
        drain: Drain::default(),
        resources: Resources::default(),
        env: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
    }
}

pub(crate) fn http_probe(failure_threshold: u32) -> Probe {
    Probe {
        check: ProbeCheck::Http {
            path: "/healthz".into(),
        },
        interval_ms: 100,
        timeout_ms: 2000,
        success_threshold: 1,
        failure_threshold,
        start_period_ms: 0,
    }
}

/// GET / on a replica: the body.
async fn get(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    text.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
}

fn field<'a>(body: &'a str, name: &str) -> &'a str {
    body.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or("")
}

/// Polls `cond` until it holds; panics with `what` after a generous deadline.
pub(crate) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub(crate) const READY: Duration = Duration::from_secs(30);

#[test]
fn unpack_is_idempotent_and_refuses_traversal_and_foreign_or_broken_signatures() {
    let w = World::new();
    let files: &[(&str, &[u8])] = &[
        ("app.py", b"print('hi')\n"),
        ("bin/run", b"#!/bin/sh\necho run\n"),
        ("data/notes.txt", b"plain\n"),
    ];
    write_bundle(&w.bundle, &w.key, "1.0.0", files);
    let vdir = w.dir.path().join("v1");
    let key = w.key.verifying_key();
    let first = unpack(&w.bundle, &vdir, Some(&key)).expect("unpack");
    assert!(first.extracted);
    assert_eq!(first.files_dir, vdir.join("files"));
    assert_eq!(
        fs::read(vdir.join("files/data/notes.txt")).expect("file"),
        b"plain\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        fs::metadata(vdir.join("files").join(p))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("bin/run"), 0o755, "a script is made executable");
    assert_eq!(mode("data/notes.txt"), 0o644);
    let again = unpack(&w.bundle, &vdir, Some(&key)).expect("unpack again");
    assert!(!again.extracted, "a second unpack reuses the directory");
    assert_eq!(again.manifest, first.manifest);

    // Another bundle of the same version is refused for that directory.
    let other_bundle = w.dir.path().join("other.tar.zst");
    write_bundle(&other_bundle, &w.key, "1.0.0", &[("app.py", b"changed\n")]);
    let e = unpack(&other_bundle, &vdir, Some(&key)).expect_err("different bundle");
    assert!(e.to_string().contains("another bundle"), "{e}");

    // Signed by a key that is not the trusted one.
    let stranger = SigningKey::from_bytes(&[7u8; 32]);
    let foreign = w.dir.path().join("foreign.tar.zst");
    write_bundle(&foreign, &stranger, "1.0.0", files);
    let e = unpack(&foreign, &w.dir.path().join("v2"), Some(&key)).expect_err("foreign key");
    assert!(matches!(e, TargetError::Start(_)));
    assert!(e.to_string().contains("manifest.pub"), "{e}");
    assert!(!w.dir.path().join("v2/files").exists());

    // A manifest changed after signing.
    let manifest = Manifest {
        format: FORMAT,
        project: "shop".into(),
        version: "1.0.0".into(),
        tag: "v1.0.0".into(),
        sha: "0".repeat(40),
        created_at: 0,
        files: vec![],
    };
    let signed = manifest.to_bytes();
    let sig = format!("{}\n", ouro_release::signing::sign_hex(&w.key, &signed));
    let public = format!("{}\n", ouro_release::signing::public_key_hex(&w.key));
    let forged = Manifest {
        version: "6.6.6".into(),
        ..manifest.clone()
    }
    .to_bytes();
    let tampered = w.dir.path().join("tampered.tar.zst");
    write_raw_bundle(
        &tampered,
        &[
            (b"manifest.json", &forged),
            (b"manifest.sig", sig.as_bytes()),
            (b"manifest.pub", public.as_bytes()),
        ],
    );
    let e = unpack(&tampered, &w.dir.path().join("v3"), None).expect_err("tampered");
    assert!(e.to_string().contains("manifest.sig"), "{e}");

    // A correctly signed bundle smuggling an entry out of the directory.
    let evil = w.dir.path().join("evil.tar.zst");
    write_raw_bundle(
        &evil,
        &[
            (b"manifest.json", &signed),
            (b"manifest.sig", sig.as_bytes()),
            (b"manifest.pub", public.as_bytes()),
            (b"files/../../escaped", b"gotcha\n"),
        ],
    );
    let e = unpack(&evil, &w.dir.path().join("v4/deep"), Some(&key)).expect_err("traversal");
    assert!(e.to_string().contains("refused"), "{e}");
    assert!(!w.dir.path().join("escaped").exists());
    assert!(!w.dir.path().join("v4/escaped").exists());
    assert!(!w.dir.path().join("v4/deep/files").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_get_their_port_env_and_limits_and_log_with_replica_ids() {
    let w = World::new();
    let _cleanup = w.cleanup();
    let sup = w.supervisor(SupervisorOptions {
        log_file_max_bytes: 256,
        ..quick()
    });
    // The first slot is taken: the replicas must use the next free ones.
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let base = taken.local_addr().expect("addr").port();
    let mut svc = service(2);
    svc.port = Port::From(base);
    svc.resources.open_files = Some(123);
    let spec = w.spec(svc);
    let ups = sup.start_version(&spec).await.expect("start");
    assert_eq!(ups.len(), 2);
    sup.wait_ready("shop", "staging", "web", "1.0.0", READY)
        .await
        .expect("ready");
    let ports: Vec<u16> = ups.iter().map(|u| u.addr.port()).collect();
    assert!(ports.iter().all(|p| *p > base), "{ports:?} from {base}");
    assert_ne!(ports[0], ports[1]);
    for (i, u) in ups.iter().enumerate() {
        assert_eq!(u.replica, format!("shop/staging/web/1.0.0/{i}"));
        assert!(u.is_ready());
        let body = get(u.addr).await;
        assert_eq!(field(&body, "version"), "1.0.0", "{body}");
        assert_eq!(field(&body, "replica"), i.to_string());
        assert_eq!(field(&body, "greeting"), "hello", "service env");
        assert_eq!(field(&body, "secret"), "s3cret", "environment env");
        assert_eq!(field(&body, "service"), "web");
        assert_eq!(field(&body, "env"), "staging");
        assert_eq!(field(&body, "nofile"), "123", "RLIMIT_NOFILE applied");
    }
    let status = sup.status("shop", "staging", "web");
    assert_eq!(status.len(), 2);
    assert!(
        status
            .iter()
            .all(|s| s.health == "ready" && s.pid.is_some())
    );
    let pids: Vec<Option<u32>> = status.iter().map(|s| s.pid).collect();

    // Starting again keeps the running replicas.
    let again = sup.start_version(&spec).await.expect("start again");
    assert_eq!(
        again.iter().map(|u| u.addr).collect::<Vec<_>>(),
        ups.iter().map(|u| u.addr).collect::<Vec<_>>()
    );
    let pids_again: Vec<Option<u32>> = sup
        .status("shop", "staging", "web")
        .iter()
        .map(|s| s.pid)
        .collect();
    assert_eq!(pids, pids_again);

    // Logs: both streams of both replicas, with ids, timestamps in order, newest last.
    eventually("both replicas' stdout and stderr lines", || {
        let logs = sup.logs("shop", "staging", "web", 1000);
        (0..2).all(|i| {
            let id = format!("web/1.0.0/{i}");
            logs.iter().any(|l| {
                l.replica == id
                    && l.stream == LogStream::Stdout
                    && l.text.starts_with("listening on")
            }) && logs.iter().any(|l| {
                l.replica == id
                    && l.stream == LogStream::Stderr
                    && l.text == format!("stderr hello from {i}")
            })
        })
    })
    .await;
    let logs = sup.logs("shop", "staging", "web", 1000);
    assert!(logs.windows(2).all(|p| p[0].timestamp <= p[1].timestamp));
    assert!(
        logs.iter()
            .any(|l| l.stream == LogStream::Ouro && l.text.starts_with("started pid"))
    );
    let last3 = sup.logs("shop", "staging", "web", 3);
    assert_eq!(last3.as_slice(), &logs[logs.len() - 3..]);
    let on_disk = fs::read_to_string(
        w.root()
            .join("shop/staging/web/1.0.0/replicas/1/stdout.log"),
    )
    .expect("log file");
    assert!(on_disk.contains("as replica 1"), "{on_disk}");

    // A replica that writes more than the cap: its file is rotated once, no line is lost.
    let mut chatty = service(1);
    chatty.name = "chatty".into();
    chatty.env.insert("SPAM".into(), "60".into());
    sup.start_version(&w.spec(chatty)).await.expect("start");
    sup.wait_ready("shop", "staging", "chatty", "1.0.0", READY)
        .await
        .expect("ready");
    let spam = || -> Vec<String> {
        sup.logs("shop", "staging", "chatty", 1000)
            .into_iter()
            .filter(|l| l.stream == LogStream::Stdout && l.text.starts_with("spam line"))
            .map(|l| l.text)
            .collect()
    };
    eventually("all spam lines read", || spam().len() >= 60).await;
    let expected: Vec<String> = (0..60).map(|i| format!("spam line {i}")).collect();
    assert_eq!(spam(), expected);
    let dir = w.root().join("shop/staging/chatty/1.0.0/replicas/0");
    // The tailer emits lines before it rotates in the same poll, so all lines can be seen (and
    // an earlier `.1`) while the file is still past the cap: wait for the rotated state itself.
    let size = || fs::metadata(dir.join("stdout.log")).map_or(u64::MAX, |m| m.len());
    eventually("the log file rotated below its cap", || {
        dir.join("stdout.log.1").exists() && size() <= 256
    })
    .await;
    sup.stop_version("shop", "staging", "chatty", "1.0.0")
        .await
        .expect("stop");

    sup.stop_version("shop", "staging", "web", "1.0.0")
        .await
        .expect("stop");
    for pid in pids.into_iter().flatten() {
        assert!(!alive(pid), "pid {pid} still runs after stop");
    }
    assert!(sup.upstreams("shop", "staging", "web", "1.0.0").is_empty());
    assert!(sup.status("shop", "staging", "web").is_empty());
    sup.stop_version("shop", "staging", "web", "1.0.0")
        .await
        .expect("stopping twice is fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_readiness_check_takes_a_replica_out_of_traffic_and_back() {
    let w = World::new();
    let _cleanup = w.cleanup();
    let sup = w.supervisor(quick());
    let mut svc = service(2);
    svc.health.readiness = Some(http_probe(1));
    let ups = sup.start_version(&w.spec(svc)).await.expect("start");
    sup.wait_ready("shop", "staging", "web", "1.0.0", READY)
        .await
        .expect("ready");
    w.touch("unhealthy-1");
    eventually("replica 1 out of traffic", || !ups[1].is_ready()).await;
    assert!(ups[0].is_ready(), "the healthy replica stays in");
    let health: Vec<String> = sup
        .status("shop", "staging", "web")
        .into_iter()
        .map(|s| s.health)
        .collect();
    assert_eq!(health, vec!["ready", "unready"]);
    let e = sup
        .wait_ready(
            "shop",
            "staging",
            "web",
            "1.0.0",
            Duration::from_millis(300),
        )
        .await
        .expect_err("one replica is not ready");
    assert!(e.to_string().contains("web/1.0.0/1 is unready"), "{e}");
    assert!(e.to_string().contains("status 503"), "{e}");
    w.remove("unhealthy-1");
    eventually("replica 1 back in traffic", || ups[1].is_ready()).await;
    sup.stop_version("shop", "staging", "web", "1.0.0")
        .await
        .expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_liveness_probe_restarts_the_replica() {
    let w = World::new();
    let _cleanup = w.cleanup();
    let sup = w.supervisor(SupervisorOptions {
        start_limit: 20,
        ..quick()
    });
    let mut svc = service(1);
    // Without a start period, a slow start would count as failures (connection refused).
    svc.health.liveness = Some(Probe {
        start_period_ms: 30_000,
        ..http_probe(2)
    });
    sup.start_version(&w.spec(svc)).await.expect("start");
    sup.wait_ready("shop", "staging", "web", "1.0.0", READY)
        .await
        .expect("ready");
    let first = sup.status("shop", "staging", "web")[0].pid.expect("pid");
    // Only after a first success do failures count within the start period.
    eventually("a first successful liveness check", || {
        w.ctrl.join("healthy-seen-0").exists()
    })
    .await;
    w.touch("unhealthy");
    eventually("a restart after the liveness failure", || {
        let s = &sup.status("shop", "staging", "web")[0];
        s.restarts >= 1 && s.pid.is_some_and(|p| p != first)
    })
    .await;
    w.remove("unhealthy");
    sup.wait_ready("shop", "staging", "web", "1.0.0", READY)
        .await
        .expect("ready again");
    assert!(!alive(first), "the old process was stopped");
    let logs = sup.logs("shop", "staging", "web", 1000);
    assert!(
        logs.iter()
            .any(|l| l.text.contains("liveness probe failed") && l.text.contains("status 503")),
        "{logs:?}"
    );
    sup.stop_version("shop", "staging", "web", "1.0.0")
        .await
        .expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_replica_backs_off_and_fails_at_the_start_limit() {
    let w = World::new();
    let _cleanup = w.cleanup();
    let sup = w.supervisor(quick());
    w.touch("crash");
    sup.start_version(&w.spec(service(1))).await.expect("start");
    let e = sup
        .wait_ready("shop", "staging", "web", "1.0.0", READY)
        .await
        .expect_err("it never gets ready");
    let msg = e.to_string();
    assert!(matches!(e, TargetError::NotReady(_)));
    assert!(msg.contains("replica web/1.0.0/0 failed"), "{msg}");
    assert!(msg.contains("exit status: 3"), "{msg}");
    assert!(msg.contains("crashing on purpose"), "{msg}");
    let s = &sup.status("shop", "staging", "web")[0];
    assert_eq!(s.health, "failed");
    assert_eq!(s.restarts, 2);
    let ouro: Vec<String> = sup
        .logs("shop", "staging", "web", 1000)
        .into_iter()
        .filter(|l| l.stream == LogStream::Ouro)
        .map(|l| l.text)
        .collect();
    assert_eq!(
        ouro.iter().filter(|t| t.starts_with("started pid")).count(),
        3,
        "{ouro:?}"
    );
    // The backoff doubles.
    let delays: Vec<&String> = ouro
        .iter()
        .filter(|t| t.starts_with("restarting in"))
        .collect();
    assert_eq!(delays, vec!["restarting in 50 ms", "restarting in 100 ms"]);
    assert!(
        ouro.last()
            .is_some_and(|t| t.starts_with("failed: started 3 times")),
        "{ouro:?}"
    );

    // Fixed, and started again: a failed replica gets a fresh start.
    w.remove("crash");
    sup.start_version(&w.spec(service(1)))
        .await
        .expect("start again");
    sup.wait_ready("shop", "staging", "web", "1.0.0", READY)
        .await
        .expect("ready after the fix");
    sup.stop_version("shop", "staging", "web", "1.0.0")
        .await
        .expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_a_group_that_ignores_the_stop_signal_after_the_grace() {
    let w = World::new();
    let _cleanup = w.cleanup();
    let sup = w.supervisor(quick());
    let mut stubborn = service(1);
    stubborn.name = "stubborn".into();
    stubborn.stop.grace_ms = 300;
    stubborn.env.insert("IGNORE_TERM".into(), "1".into());
    let polite = service(1);
    sup.start_version(&w.spec(stubborn)).await.expect("start");
    sup.start_version(&w.spec(polite)).await.expect("start");
    sup.wait_ready("shop", "staging", "stubborn", "1.0.0", READY)
        .await
        .expect("ready");
    sup.wait_ready("shop", "staging", "web", "1.0.0", READY)
        .await
        .expect("ready");
    let main = sup.status("shop", "staging", "stubborn")[0]
        .pid
        .expect("pid");
    let child: u32 = fs::read_to_string(w.ctrl.join("child-0"))
        .expect("child pid")
        .trim()
        .parse()
        .expect("number");
    assert!(alive(main) && alive(child));
    let polite_pid = sup.status("shop", "staging", "web")[0].pid.expect("pid");

    let t = Instant::now();
    sup.stop_version("shop", "staging", "stubborn", "1.0.0")
        .await
        .expect("stop");
    // Generous bound: grace (0.3 s) plus the kill, far below the 10 s a stuck wait would take.
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(!alive(main), "the main process was killed");
    assert!(
        !alive(child),
        "the child it forked was killed with its group"
    );
    let logs = sup.logs("shop", "staging", "stubborn", 1000);
    assert!(
        logs.iter().any(|l| l.text.contains("sending SIGKILL")),
        "{logs:?}"
    );

    sup.stop_version("shop", "staging", "web", "1.0.0")
        .await
        .expect("stop");
    assert!(!alive(polite_pid));
    let logs = sup.logs("shop", "staging", "web", 1000);
    assert!(
        !logs.iter().any(|l| l.text.contains("SIGKILL")),
        "TERM was enough: {logs:?}"
    );
}

/// Processes whose environment holds `needle` (the replicas of one test).
pub(crate) fn processes_with_env(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(env) = fs::read(e.path().join("environ"))
            && env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
            && alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_supervisor_adopts_live_replicas_and_restarts_dead_ones() {
    let w = World::new();
    let _cleanup = w.cleanup();
    let token = format!("TEST_TOKEN={:016x}", rand::random::<u64>());
    let (k, v) = token.split_once('=').expect("token");
    let mut svc = service(3);
    svc.env.insert(k.into(), v.into());
    let spec = w.spec(svc);

    let sup = w.supervisor(quick());
    let ups = sup.start_version(&spec).await.expect("start");
    sup.wait_ready("shop", "staging", "web", "1.0.0", READY)
        .await
        .expect("ready");
    let before: Vec<u32> = sup
        .status("shop", "staging", "web")
        .iter()
        .map(|s| s.pid.expect("pid"))
        .collect();
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();

    // Ouro "restarts": the supervisor goes, its processes stay.
    drop(ups);
    drop(sup);
    for (pid, addr) in before.iter().zip(&addrs) {
        assert!(alive(*pid));
        assert_eq!(field(&get(*addr).await, "pid"), pid.to_string());
    }
    // Replica 2 dies while Ouro is down.
    // SAFETY: kill(2) on the process group of a replica this test started.
    unsafe {
        libc::kill(-(before[2] as i32), libc::SIGKILL);
    }
    eventually("replica 2 gone", || !alive(before[2])).await;

    let sup = w.supervisor(quick());
    let report = sup.recover().await.expect("recover");
    assert_eq!(
        report.adopted,
        vec!["shop/staging/web/1.0.0/0", "shop/staging/web/1.0.0/1"]
    );
    assert_eq!(report.restarted, vec!["shop/staging/web/1.0.0/2"]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    sup.wait_ready("shop", "staging", "web", "1.0.0", READY)
        .await
        .expect("ready after recovery");
    let after: Vec<u32> = sup
        .status("shop", "staging", "web")
        .iter()
        .map(|s| s.pid.expect("pid"))
        .collect();
    assert_eq!(
        after[..2],
        before[..2],
        "live replicas are adopted, not restarted"
    );
    assert_ne!(after[2], before[2]);
    let ups = sup.upstreams("shop", "staging", "web", "1.0.0");
    for (u, pid) in ups.iter().zip(&after) {
        assert_eq!(field(&get(u.addr).await, "pid"), pid.to_string());
    }
    let mut running = processes_with_env(&token);
    running.sort();
    let mut expected = after.clone();
    expected.sort();
    assert_eq!(running, expected, "exactly one process per replica");

    // Recovering again changes nothing.
    let again = sup.recover().await.expect("recover again");
    assert!(
        again.adopted.is_empty() && again.restarted.is_empty(),
        "{again:?}"
    );
    assert_eq!(processes_with_env(&token).len(), 3);

    // The adopted replicas are supervised: a crash of one is restarted.
    // SAFETY: as above.
    unsafe {
        libc::kill(-(after[0] as i32), libc::SIGKILL);
    }
    eventually("adopted replica 0 restarted", || {
        sup.status("shop", "staging", "web")[0]
            .pid
            .is_some_and(|p| p != after[0])
    })
    .await;
    sup.wait_ready("shop", "staging", "web", "1.0.0", READY)
        .await
        .expect("ready");

    // Another restart, and this time the version is stopped without being recovered first:
    // the recorded processes are stopped all the same, and a later recovery starts nothing.
    drop(sup);
    let sup = w.supervisor(quick());
    sup.stop_version("shop", "staging", "web", "1.0.0")
        .await
        .expect("stop");
    assert!(processes_with_env(&token).is_empty());
    let report = sup.recover().await.expect("recover");
    assert!(
        report.adopted.is_empty() && report.restarted.is_empty(),
        "{report:?}"
    );
    assert!(processes_with_env(&token).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_and_tcp_probes_run_with_the_replica_env_and_a_timeout() {
    let w = World::new();
    let _cleanup = w.cleanup();
    let sup = w.supervisor(quick());
    let probe = |check| Probe {
        check,
        interval_ms: 100,
        timeout_ms: 2000,
        success_threshold: 1,
        failure_threshold: 1,
        start_period_ms: 0,
    };
    // The command runs in the files directory with the replica's environment.
    let mut cmd = service(1);
    cmd.name = "cmd".into();
    cmd.health.readiness = Some(probe(ProbeCheck::Command {
        run: r#"test -f app.py && test ! -e "$CTRL/unhealthy-$OURO_REPLICA""#.into(),
    }));
    let mut tcp = service(1);
    tcp.name = "tcp".into();
    tcp.health.readiness = Some(probe(ProbeCheck::Tcp));
    let mut slow = service(1);
    slow.name = "slow".into();
    slow.health.readiness = Some(Probe {
        timeout_ms: 200,
        ..probe(ProbeCheck::Command {
            run: "sleep 30".into(),
        })
    });
    let cmd_up = sup.start_version(&w.spec(cmd)).await.expect("start");
    sup.start_version(&w.spec(tcp)).await.expect("start");
    sup.start_version(&w.spec(slow)).await.expect("start");
    sup.wait_ready("shop", "staging", "cmd", "1.0.0", READY)
        .await
        .expect("command probe passes");
    sup.wait_ready("shop", "staging", "tcp", "1.0.0", READY)
        .await
        .expect("tcp probe passes");
    w.touch("unhealthy-0");
    eventually("the command probe fails", || !cmd_up[0].is_ready()).await;

    let e = sup
        .wait_ready("shop", "staging", "slow", "1.0.0", Duration::from_secs(2))
        .await
        .expect_err("the probe never finishes in time");
    assert!(
        e.to_string().contains("killed after the 200 ms timeout"),
        "{e}"
    );
    for name in ["cmd", "tcp", "slow"] {
        sup.stop_version("shop", "staging", name, "1.0.0")
            .await
            .expect("stop");
    }
    // The timed-out probe commands were killed, not left sleeping.
    let ctrl = format!("CTRL={}", w.ctrl.display());
    let sleepers: Vec<u32> = processes_with_env(&ctrl)
        .into_iter()
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0"))
        })
        .collect();
    assert!(sleepers.is_empty(), "{sleepers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_again_after_a_restart_keeps_the_running_replica_and_bad_bundles_start_nothing() {
    let w = World::new();
    let _cleanup = w.cleanup();
    let sup = w.supervisor(quick());
    let spec = w.spec(service(1));
    sup.start_version(&spec).await.expect("start");
    sup.wait_ready("shop", "staging", "web", "1.0.0", READY)
        .await
        .expect("ready");
    let pid = sup.status("shop", "staging", "web")[0].pid.expect("pid");
    drop(sup);
    // The bundle was a temporary export and is gone now; the unpacked files are enough.
    fs::remove_file(&w.bundle).expect("rm bundle");
    let sup = w.supervisor(quick());
    sup.start_version(&spec).await.expect("start after restart");
    assert_eq!(sup.status("shop", "staging", "web")[0].pid, Some(pid));
    sup.wait_ready("shop", "staging", "web", "1.0.0", READY)
        .await
        .expect("ready");

    let stranger = SigningKey::from_bytes(&[9u8; 32]);
    let foreign = w.dir.path().join("foreign.tar.zst");
    write_bundle(&foreign, &stranger, "2.0.0", &[("app.py", APP.as_bytes())]);
    let bad = VersionSpec {
        version: "2.0.0".into(),
        bundle: foreign,
        ..w.spec(service(1))
    };
    let e = sup
        .start_version(&bad)
        .await
        .expect_err("foreign signature");
    assert!(matches!(e, TargetError::Start(_)), "{e}");
    assert!(e.to_string().contains("manifest.pub"), "{e}");
    let missing = VersionSpec {
        version: "3.0.0".into(),
        bundle: w.dir.path().join("nowhere.tar.zst"),
        ..w.spec(service(1))
    };
    let e = sup.start_version(&missing).await.expect_err("no bundle");
    assert!(e.to_string().contains("nowhere.tar.zst"), "{e}");
    let traversal = VersionSpec {
        version: "../../escape".into(),
        ..w.spec(service(1))
    };
    let e = sup
        .start_version(&traversal)
        .await
        .expect_err("bad version name");
    assert!(e.to_string().contains("directory name"), "{e}");
    let versions: Vec<String> = sup
        .status("shop", "staging", "web")
        .into_iter()
        .map(|s| s.version)
        .collect();
    assert_eq!(versions, vec!["1.0.0"]);
    let root = w.root().join("shop/staging/web");
    assert!(!root.join("2.0.0/version.json").exists());
    assert!(!root.join("3.0.0/version.json").exists());
    sup.stop_version("shop", "staging", "web", "1.0.0")
        .await
        .expect("stop");
    assert!(!alive(pid));
}
