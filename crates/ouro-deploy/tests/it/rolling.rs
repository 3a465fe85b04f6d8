//! Rolling updates on the local target with real replicas behind the real proxy: the batches
//! stay within max-surge and max-unavailable while a keep-alive load runs, a new version that
//! never gets ready is rolled back, and old unpacked versions are cleaned up.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use ouro_deploy::local::Supervisor;
use ouro_deploy::local_target::LocalTarget;
use ouro_deploy::proxy::{Proxy, ProxyOptions};
use ouro_deploy::spec::{Route, Service, Strategy};
use ouro_deploy::strategy::{self, Moved, Options, ServicePlan, Steps};
use ouro_deploy::target::{Target, VersionSpec};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::local::{
    APP, World, eventually, find_files, http_probe, processes_with_env, quick, service,
    write_bundle,
};

const KEY: &str = "shop/staging";

#[derive(Default)]
struct Recorded(Mutex<Vec<(String, bool, Value)>>);

impl Recorded {
    fn named(&self, name: &str) -> Vec<(bool, Value)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, ok, d)| (*ok, d.clone()))
            .collect()
    }
}

impl Steps for Recorded {
    fn record<'a>(
        &'a self,
        _service: &'a str,
        name: &'a str,
        ok: bool,
        detail: Value,
        _started_at: i64,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.0.lock().unwrap().push((name.to_string(), ok, detail));
        })
    }
}

struct Rig {
    w: World,
    sup: Arc<Supervisor>,
    target: LocalTarget,
    route: Route,
}

impl Rig {
    fn new() -> Rig {
        let w = World::new();
        let sup = w.supervisor(quick());
        let target = LocalTarget::new(
            sup.clone(),
            Proxy::new(ProxyOptions::default()),
            "127.0.0.1:0".into(),
        );
        Rig {
            w,
            sup,
            target,
            route: Route::default(),
        }
    }

    /// The spec of `version` (its own signed bundle) with `svc`.
    fn spec(&self, svc: &Service, version: &str) -> VersionSpec {
        let bundle: PathBuf = self.w.dir.path().join(format!("web-{version}.tar.zst"));
        if !bundle.exists() {
            write_bundle(&bundle, &self.w.key, version, &[("app.py", APP.as_bytes())]);
        }
        let mut spec = self.w.spec(svc.clone());
        spec.version = version.into();
        spec.bundle = bundle;
        spec
    }

    async fn deploy(&self, spec: &VersionSpec, old: Option<&str>, steps: &Recorded) -> Moved {
        let plan = ServicePlan {
            new: spec,
            old,
            route: &self.route,
            strategy: None,
        };
        let opts = Options {
            ready_timeout: Duration::from_secs(30),
        };
        strategy::run(&self.target, steps, &plan, &opts).await
    }

    fn addr(&self) -> SocketAddr {
        self.target
            .endpoint(KEY, "web")
            .expect("routed")
            .parse()
            .expect("address")
    }

    fn version_dirs(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.w.root().join("shop/staging/web"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn rolling(replicas: u32, max_surge: u32, max_unavailable: u32) -> Service {
    let mut svc = service(replicas);
    svc.env.insert("HTTP11".into(), "1".into());
    svc.health.readiness = Some(http_probe(1));
    svc.strategy = Strategy::Rolling {
        max_surge,
        max_unavailable,
    };
    svc
}

/// Steady keep-alive load on the proxy: counts answered and failed requests (a failure is an
/// error status, a broken connection or a malformed response).
struct Load {
    stats: Arc<LoadStats>,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stats = Arc::new(LoadStats::default());
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failed, failures, stats) = (
                    stop.clone(),
                    ok.clone(),
                    failed.clone(),
                    failures.clone(),
                    stats.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match keep_alive_session(addr, &stop, &ok, &stats).await {
                            Ok(()) => {}
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                failures.lock().unwrap().push(e);
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stats,
            stop,
            ok,
            failed,
            failures,
            tasks,
        }
    }

    /// (answered, failed, failures, connections opened, versions that answered).
    async fn finish(self) -> (u64, u64, Vec<String>, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let failures = self.failures.lock().unwrap().clone();
        let mut versions = self.stats.versions.lock().unwrap().clone();
        versions.sort();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            failures,
            self.stats.connections.load(Ordering::Relaxed),
            versions,
        )
    }
}

/// What the load saw besides answers and failures.
#[derive(Default)]
struct LoadStats {
    connections: AtomicU64,
    versions: Mutex<Vec<String>>,
}

/// Requests on one connection until `stop`; an error ends the session.
async fn keep_alive_session(
    addr: SocketAddr,
    stop: &AtomicBool,
    ok: &AtomicU64,
    stats: &LoadStats,
) -> Result<(), String> {
    let s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stats.connections.fetch_add(1, Ordering::Relaxed);
    let mut s = BufReader::new(s);
    while !stop.load(Ordering::Relaxed) {
        s.get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut status = String::new();
        s.read_line(&mut status)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
            return Err(format!("status line {status:?}"));
        }
        // HTTP/1.0 closes after the response unless it says keep-alive; 1.1 unless it says close.
        let mut keep_alive = status.starts_with("HTTP/1.1");
        let mut len = None;
        loop {
            let mut line = String::new();
            s.read_line(&mut line)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if line.is_empty() {
                return Err("connection closed in the headers".into());
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("connection") {
                    keep_alive = v.trim().eq_ignore_ascii_case("keep-alive");
                }
            }
        }
        let len = len.ok_or("no content-length")?;
        let mut body = vec![0; len];
        s.read_exact(&mut body)
            .await
            .map_err(|e| format!("body: {e}"))?;
        if !body.starts_with(b"version=") {
            return Err(format!("body {:?}", String::from_utf8_lossy(&body)));
        }
        ok.fetch_add(1, Ordering::Relaxed);
        let version = String::from_utf8_lossy(&body)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_start_matches("version=")
            .to_string();
        {
            let mut seen = stats.versions.lock().unwrap();
            if !seen.contains(&version) {
                seen.push(version);
            }
        }
        if !keep_alive {
            return Ok(());
        }
    }
    Ok(())
}

/// Replica processes alive: each replica runs in its own process group (a `python3` shim may
/// add helper processes to it), so distinct groups of the test's processes count replicas.
fn replica_groups(needle: &str) -> usize {
    let mut groups: Vec<u32> = processes_with_env(needle)
        .into_iter()
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().nth(2)?.parse().ok()
        })
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups.len()
}

/// The extremes seen while sampling: most replica processes and replicas in the supervisor's
/// status, fewest replicas both ready and routed.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    max_processes: usize,
    max_supervised: usize,
    min_ready_routed: usize,
    samples: u64,
}

fn sample(rig: &Rig, needle: &str, seen: &mut Seen) {
    // Routed first: a replica leaves the route before it stops, so reading the route first can
    // only see more routed replicas than the status has, never fewer.
    let routed = rig.target.routed(KEY, "web");
    let status = rig.target.status(KEY, "web");
    let ready_routed = status
        .iter()
        .filter(|r| r.health == "ready" && routed.contains(&r.replica))
        .count();
    let supervised = status.iter().filter(|r| r.health != "stopped").count();
    let processes = replica_groups(needle);
    seen.max_processes = seen.max_processes.max(processes);
    seen.max_supervised = seen.max_supervised.max(supervised);
    seen.min_ready_routed = if seen.samples == 0 {
        ready_routed
    } else {
        seen.min_ready_routed.min(ready_routed)
    };
    seen.samples += 1;
}

/// Runs a rolling update from 1.0.0 (4 replicas, live) to 2.0.0 under load while sampling.
async fn roll_under_load(
    rig: &Arc<Rig>,
    surge: u32,
    unavailable: u32,
) -> (
    Moved,
    Seen,
    (u64, u64, Vec<String>, u64, Vec<String>),
    Recorded,
) {
    let svc = rolling(4, surge, unavailable);
    let v1 = rig.spec(&svc, "1.0.0");
    let first = rig.deploy(&v1, None, &Recorded::default()).await;
    assert_eq!(first, Moved::Live { keep_warm_ms: 0 });
    let needle = format!("CTRL={}", rig.w.ctrl.display());
    eventually("4 replicas of 1.0.0 run", || replica_groups(&needle) == 4).await;
    let load = Load::start(rig.addr(), 2);
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (rig, done, needle) = (rig.clone(), done.clone(), needle.clone());
        tokio::spawn(async move {
            let mut seen = Seen::default();
            while !done.load(Ordering::Relaxed) {
                sample(&rig, &needle, &mut seen);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sample(&rig, &needle, &mut seen);
            seen
        })
    };
    let steps = Recorded::default();
    let v2 = rig.spec(&svc, "2.0.0");
    let moved = rig.deploy(&v2, Some("1.0.0"), &steps).await;
    done.store(true, Ordering::Relaxed);
    let seen = sampler.await.expect("sampler");
    let load = load.finish().await;
    (moved, seen, load, steps)
}

fn batches(steps: &Recorded) -> Vec<(u64, u64, u64, u64)> {
    steps
        .named("batch")
        .iter()
        .map(|(ok, d)| {
            assert!(ok, "{d}");
            let n = |k: &str| d[k].as_u64().unwrap_or(u64::MAX);
            (
                n("started"),
                n("stopped"),
                n("new_replicas"),
                n("old_replicas"),
            )
        })
        .collect()
}

async fn serving_versions(rig: &Rig, requests: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..requests {
        let mut s = tokio::net::TcpStream::connect(rig.addr())
            .await
            .expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        let text = String::from_utf8_lossy(&buf).into_owned();
        assert!(
            text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200"),
            "{text}"
        );
        let v = text
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("version="))
            .unwrap_or("")
            .to_string();
        seen.push(v);
    }
    seen.sort();
    seen.dedup();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_with_surge_1_keeps_4_ready_and_never_runs_more_than_5() {
    let rig = Arc::new(Rig::new());
    let _cleanup = rig.w.cleanup();
    let (moved, seen, (ok, failed, failures, connections, versions), steps) =
        roll_under_load(&rig, 1, 0).await;
    assert_eq!(moved, Moved::Live { keep_warm_ms: 0 });
    assert!(seen.samples > 10, "{seen:?}");
    assert!(seen.max_processes <= 5, "{seen:?}");
    assert!(seen.max_supervised <= 5, "{seen:?}");
    assert!(seen.min_ready_routed >= 4, "{seen:?}");
    assert_eq!(failed, 0, "{ok} answered; failures: {failures:?}");
    // Two keep-alive connections for the whole update, answered by both versions.
    assert_eq!(connections, 2, "{ok} answered");
    assert_eq!(versions, vec!["1.0.0".to_string(), "2.0.0".to_string()]);
    assert!(ok > 0, "the load ran");
    // One new replica in, one old replica out, four times.
    assert_eq!(
        batches(&steps),
        vec![(1, 1, 1, 3), (1, 1, 2, 2), (1, 1, 3, 1), (1, 1, 4, 0)]
    );
    let status = rig.target.status(KEY, "web");
    assert_eq!(status.len(), 4, "{status:?}");
    assert!(
        status
            .iter()
            .all(|r| r.version == "2.0.0" && r.health == "ready")
    );
    assert_eq!(serving_versions(&rig, 8).await, vec!["2.0.0".to_string()]);
    rig.sup
        .stop_version("shop", "staging", "web", "2.0.0")
        .await
        .expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_with_surge_0_never_runs_more_than_4() {
    let rig = Arc::new(Rig::new());
    let _cleanup = rig.w.cleanup();
    let (moved, seen, (ok, failed, failures, connections, versions), steps) =
        roll_under_load(&rig, 0, 2).await;
    assert_eq!(moved, Moved::Live { keep_warm_ms: 0 });
    assert!(seen.max_processes <= 4, "{seen:?}");
    assert!(seen.max_supervised <= 4, "{seen:?}");
    assert!(seen.min_ready_routed >= 2, "{seen:?}");
    assert_eq!(failed, 0, "{ok} answered; failures: {failures:?}");
    // Two keep-alive connections for the whole update, answered by both versions.
    assert_eq!(connections, 2, "{ok} answered");
    assert_eq!(versions, vec!["1.0.0".to_string(), "2.0.0".to_string()]);
    // Two old out first (nothing may surge), then two new in and two old out, then two new in.
    assert_eq!(
        batches(&steps),
        vec![(0, 2, 0, 2), (2, 2, 2, 0), (2, 0, 4, 0)]
    );
    assert_eq!(serving_versions(&rig, 8).await, vec!["2.0.0".to_string()]);
    rig.sup
        .stop_version("shop", "staging", "web", "2.0.0")
        .await
        .expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_that_never_gets_ready_is_rolled_back_to_all_old_replicas() {
    let rig = Arc::new(Rig::new());
    let _cleanup = rig.w.cleanup();
    let svc = rolling(4, 0, 2);
    let v1 = rig.spec(&svc, "1.0.0");
    let first = rig.deploy(&v1, None, &Recorded::default()).await;
    assert_eq!(first, Moved::Live { keep_warm_ms: 0 });
    rig.w.touch("unhealthy-v2.0.0");
    let v2 = rig.spec(&svc, "2.0.0");
    let plan = ServicePlan {
        new: &v2,
        old: Some("1.0.0"),
        route: &rig.route,
        strategy: None,
    };
    let steps = Recorded::default();
    let moved = strategy::run(
        &rig.target,
        &steps,
        &plan,
        &Options {
            ready_timeout: Duration::from_secs(3),
        },
    )
    .await;
    let Moved::Failed {
        reason,
        rolled_back,
    } = moved
    else {
        panic!("{moved:?}")
    };
    assert!(rolled_back, "{reason}");
    assert!(reason.contains("did not become ready"), "{reason}");
    assert!(
        reason.contains("went back to 1.0.0 with 4 replicas"),
        "{reason}"
    );
    // The first batch took two old replicas out before the new ones failed.
    assert_eq!(batches(&steps), vec![(0, 2, 0, 2)]);
    let rollback = steps.named("rollback");
    assert_eq!(rollback.len(), 1);
    assert!(rollback[0].0, "{:?}", rollback[0].1);
    let status = rig.target.status(KEY, "web");
    assert_eq!(status.len(), 4, "{status:?}");
    assert!(
        status
            .iter()
            .all(|r| r.version == "1.0.0" && r.health == "ready"),
        "{status:?}"
    );
    let mut routed = rig.target.routed(KEY, "web");
    routed.sort();
    assert_eq!(
        routed,
        (0..4).map(|i| format!("web/1.0.0/{i}")).collect::<Vec<_>>()
    );
    assert_eq!(serving_versions(&rig, 8).await, vec!["1.0.0".to_string()]);
    rig.sup
        .stop_version("shop", "staging", "web", "1.0.0")
        .await
        .expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_versions_are_removed_beyond_keep_but_never_live_previous_or_running_ones() {
    let rig = Rig::new();
    let _cleanup = rig.w.cleanup();
    let svc = rolling(1, 1, 0);
    let versions = ["1.0.0", "2.0.0", "3.0.0", "4.0.0", "5.0.0"];
    let mut previous: Option<&str> = None;
    for v in versions {
        let spec = rig.spec(&svc, v);
        let moved = rig.deploy(&spec, previous, &Recorded::default()).await;
        assert_eq!(moved, Moved::Live { keep_warm_ms: 0 }, "{v}");
        // As the engine does after each deployment: live and previous are protected.
        let mut protected = vec![v.to_string()];
        protected.extend(previous.map(str::to_string));
        rig.target
            .prune(KEY, "web", 3, &protected)
            .await
            .expect("prune");
        previous = Some(v);
    }
    assert_eq!(rig.version_dirs(), vec!["3.0.0", "4.0.0", "5.0.0"]);

    // A rollback to the previous version after the cleanup: a blue-green switch back.
    let back = rig.spec(&svc, "4.0.0");
    fs::remove_file(&back.bundle).expect("the bundle is not needed: the unpacked files are");
    let plan = ServicePlan {
        new: &back,
        old: Some("5.0.0"),
        route: &rig.route,
        strategy: Some(Strategy::BlueGreen {
            keep_warm_ms: 60_000,
        }),
    };
    let moved = strategy::run(
        &rig.target,
        &Recorded::default(),
        &plan,
        &Options::default(),
    )
    .await;
    assert_eq!(
        moved,
        Moved::Live {
            keep_warm_ms: 60_000
        }
    );
    assert_eq!(serving_versions(&rig, 4).await, vec!["4.0.0".to_string()]);

    // 4.0.0 and 5.0.0 run now (5.0.0 is kept warm: the engine would stop it later): keep 0 and nothing protected removes only
    // 3.0.0, whose replicas are stopped.
    let removed = rig.target.prune(KEY, "web", 0, &[]).await.expect("prune");
    assert_eq!(removed, vec!["3.0.0".to_string()]);
    assert_eq!(rig.version_dirs(), vec!["4.0.0", "5.0.0"]);

    // A replica still running from a directory no supervisor knows (an earlier Ouro's) keeps it.
    rig.target.stop(KEY, "web", "5.0.0").await.expect("stop");
    let other = rig.w.supervisor(quick());
    let spec6 = rig.spec(&svc, "6.0.0");
    other.start_version(&spec6).await.expect("start 6");
    other
        .wait_ready("shop", "staging", "web", "6.0.0", Duration::from_secs(30))
        .await
        .expect("ready 6");
    // Make the running version look stopped to `rig.sup`: no desired state on disk.
    let vfile = rig.w.root().join("shop/staging/web/6.0.0/version.json");
    let saved = fs::read(&vfile).expect("version.json");
    fs::remove_file(&vfile).expect("rm");
    let removed = rig.target.prune(KEY, "web", 0, &[]).await.expect("prune");
    assert_eq!(
        removed,
        vec!["5.0.0".to_string()],
        "6.0.0 has a live replica"
    );
    assert_eq!(rig.version_dirs(), vec!["4.0.0", "6.0.0"]);
    fs::write(&vfile, saved).expect("restore");
    other
        .stop_version("shop", "staging", "web", "6.0.0")
        .await
        .expect("stop 6");

    // An interrupted removal is finished at the next start.
    let trash = rig.w.root().join("shop/staging/web/.2.0.0.trash");
    fs::create_dir_all(trash.join("files")).expect("trash");
    let report = rig.w.supervisor(quick()).recover().await.expect("recover");
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(!trash.exists());
    rig.target.stop(KEY, "web", "4.0.0").await.expect("stop");
    assert!(
        find_files(&rig.w.root(), "state.json").is_empty(),
        "every replica was stopped"
    );
}

#[tokio::test]
async fn a_route_another_environment_holds_on_the_same_address_and_host_is_refused() {
    let rig = Rig::new();
    let _cleanup = rig.w.cleanup();
    let svc = rolling(1, 1, 0);
    let host = |h: &str, listen: &str| Route {
        listen: Some(listen.into()),
        host: Some(h.into()),
    };
    let split = ouro_deploy::target::Split::all("1.0.0");
    let first = host("web-1.review.test", "127.0.0.1:0");
    rig.target
        .route("shop/review-web-1", &svc, &first, &split)
        .await
        .expect("first route");
    let listen = rig
        .target
        .endpoint("shop/review-web-1", "web")
        .expect("bound");
    // Another environment on that address: its own host is fine, the same host is refused.
    rig.target
        .route(
            "shop/review-api-1",
            &svc,
            &host("api-1.review.test", &listen),
            &split,
        )
        .await
        .expect("another host");
    let err = rig
        .target
        .route(
            "shop/review-other-1",
            &svc,
            &host("web-1.review.test", &listen),
            &split,
        )
        .await
        .expect_err("the same host");
    assert!(err.to_string().contains("shop/review-web-1"), "{err}");
    // The environment that holds it may route again (a switch).
    rig.target
        .route("shop/review-web-1", &svc, &first, &split)
        .await
        .expect("the same environment again");
}
