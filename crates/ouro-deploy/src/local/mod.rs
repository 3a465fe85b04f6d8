//! The local target's supervisor: each version of a service runs as supervised processes
//! (replicas) unpacked from its verified release bundle.
//!
//! On disk, under `root` (`DATA_DIR/deploy`), per version:
//!
//! ```text
//! <project>/<environment>/<service>/<version>/
//!     files/             the unpacked bundle (the replicas' working directory)
//!     unpacked           marker: `files` is complete (the manifest's sha256)
//!     version.json       the desired state: this version should run (removed by stop)
//!     last_started       when the version was last started (orders versions for retention)
//!     replicas/<N>/      state.json (pid, port, start time), lock, stdout.log, stderr.log
//! <project>/<environment>/<service>/.<version>.trash
//!                        a version being removed by [`Supervisor::prune`] (renamed first, so
//!                        a crash leaves a name no one runs from; removed at the next start)
//! ```
//!
//! Replicas live in their own sessions and outlive Ouro; [`Supervisor::recover`] re-adopts them
//! after a restart (the `process` module explains the lock that proves a replica alive).

pub mod logs;
mod probe;
mod process;
pub mod unpack;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ouro_release::signing::VerifyingKey;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use logs::{LogLine, LogStream};

use crate::spec::{Port, Probe, Service, Stop};
use crate::target::{ReplicaStatus, TargetError, VersionSpec};
use crate::upstream::Upstream;
use logs::{LogStore, Tailer};
use process::Spawned;

/// How the supervisor restarts, limits and logs replicas.
#[derive(Clone, Debug)]
pub struct SupervisorOptions {
    /// Delay before the first restart after a crash; doubles after each crash.
    pub backoff_initial: Duration,
    /// The longest delay between restarts.
    pub backoff_max: Duration,
    /// More than this many starts of one replica within `start_window` mark it failed.
    pub start_limit: u32,
    pub start_window: Duration,
    /// Bundles must be signed by this key (the instance's release signing key). None: the key
    /// the bundle carries is used, which proves integrity but not origin.
    pub trusted_key: Option<VerifyingKey>,
    /// Log lines kept in memory per service.
    pub log_lines: usize,
    /// A replica's log file is rotated (one `.1` kept) past this size.
    pub log_file_max_bytes: u64,
    /// How often log files are read and adopted replicas are checked.
    pub poll_interval: Duration,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        SupervisorOptions {
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            start_limit: 5,
            start_window: Duration::from_secs(60),
            trusted_key: None,
            log_lines: 2000,
            log_file_max_bytes: 10 << 20,
            poll_interval: Duration::from_millis(100),
        }
    }
}

/// What [`Supervisor::recover`] did, by replica id (`service/version/N`, prefixed with
/// `project/environment/`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecoverReport {
    /// Still running: monitored again, same process.
    pub adopted: Vec<String>,
    /// Recorded as running but dead: started again.
    pub restarted: Vec<String>,
    /// Processes of stopped versions that were still running and were killed.
    pub killed: Vec<String>,
    /// Versions that could not be recovered, and why.
    pub errors: Vec<String>,
}

type VersionKey = (String, String, String, String);
type ServiceKey = (String, String, String);

const VERSION_FILE: &str = "version.json";
const LAST_STARTED: &str = "last_started";
const TRASH_SUFFIX: &str = ".trash";
const REPLICAS: &str = "replicas";
const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";
const STDOUT_LOG: &str = "stdout.log";
const STDERR_LOG: &str = "stderr.log";
/// How long the group of a replica gets to disappear after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The desired state of a version, kept so a restarted Ouro can reach it again. Holds the
/// environment's variables and secrets, so it is written with mode 0600.
#[derive(Serialize, Deserialize)]
struct RecordedVersion {
    project: String,
    environment: String,
    version: String,
    bundle: PathBuf,
    env: BTreeMap<String, String>,
    service: Service,
}

/// One replica's process as last started.
#[derive(Serialize, Deserialize)]
struct ReplicaRecord {
    project: String,
    environment: String,
    service: String,
    version: String,
    index: u32,
    pid: u32,
    port: u16,
    /// From /proc/PID/stat: tells a reused pid apart.
    start_time: u64,
}

/// What every replica of a version shares.
struct RunSpec {
    project: String,
    environment: String,
    version: String,
    service: Service,
    files_dir: PathBuf,
    version_dir: PathBuf,
    /// The service's env with the environment's on top.
    env: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Starting,
    Running,
    Restarting,
    Failed,
    Stopping,
    Stopped,
}

struct ReplicaState {
    phase: Phase,
    pid: Option<u32>,
    restarts: u32,
    last_exit: Option<String>,
    ever_ready: bool,
    last_probe_error: Option<String>,
}

struct Replica {
    id: String,
    index: u32,
    run: Arc<RunSpec>,
    port: u16,
    dir: PathBuf,
    env: BTreeMap<String, String>,
    upstream: Arc<Upstream>,
    state: Mutex<ReplicaState>,
    stop_tx: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    tailer: Mutex<Tailer>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the supervisor down with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Replica {
    fn lock_path(&self) -> PathBuf {
        self.dir.join(LOCK_FILE)
    }

    fn service_key(&self) -> ServiceKey {
        (
            self.run.project.clone(),
            self.run.environment.clone(),
            self.run.service.name.clone(),
        )
    }

    fn set_phase(&self, phase: Phase) {
        lock(&self.state).phase = phase;
    }

    fn phase(&self) -> Phase {
        lock(&self.state).phase
    }

    fn health(&self) -> &'static str {
        self.health_locked(&lock(&self.state))
    }

    fn stop_requested(&self) -> bool {
        *self.stop_tx.borrow()
    }
}

/// Aborts a helper task when its owner goes (an aborted supervising task takes its probes and
/// tailer with it).
struct AbortOnDrop(Option<JoinHandle<()>>);

impl AbortOnDrop {
    fn spawn(f: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        AbortOnDrop(Some(tokio::spawn(f)))
    }

    /// Aborts the task and waits until it is gone: a poll running on another thread could
    /// otherwise still act (e.g. mark a dead replica ready) after this returns.
    async fn finish(mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
            let _ = h.await;
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// What the supervising tasks share.
struct Shared {
    options: SupervisorOptions,
    logs: LogStore,
}

impl Shared {
    fn event(&self, r: &Replica, text: String) {
        tracing::info!(replica = %r.id, project = %r.run.project, environment = %r.run.environment, "{text}");
        self.logs.push(
            &r.service_key(),
            LogLine {
                timestamp: OffsetDateTime::now_utc(),
                replica: r.id.clone(),
                stream: LogStream::Ouro,
                text,
            },
        );
    }

    /// Moves what the replica wrote since the last poll into the ring.
    fn read_logs(&self, r: &Replica, flush: bool) {
        let key = r.service_key();
        let mut t = lock(&r.tailer);
        t.poll(flush, &mut |stream, text| {
            self.logs.push(
                &key,
                LogLine {
                    timestamp: OffsetDateTime::now_utc(),
                    replica: r.id.clone(),
                    stream,
                    text,
                },
            )
        });
    }
}

struct VersionRun {
    replicas: Mutex<BTreeMap<u32, Arc<Replica>>>,
}

/// Runs versions of services as supervised local processes. Share it as `Arc<Supervisor>`;
/// dropping it stops the supervision (not the processes, which a new supervisor recovers).
pub struct Supervisor {
    root: PathBuf,
    shared: Arc<Shared>,
    versions: Mutex<BTreeMap<VersionKey, Arc<VersionRun>>>,
    /// Ports handed to replicas, so two replicas never get the same one.
    ports: Mutex<BTreeSet<u16>>,
    /// Serialises start, stop and recovery of one version.
    version_locks: Mutex<HashMap<VersionKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for v in lock(&self.versions).values() {
            for r in lock(&v.replicas).values() {
                if let Some(t) = lock(&r.task).take() {
                    t.abort();
                }
            }
        }
    }
}

/// Refuses names that could leave the root when used as a directory name.
fn check_name(kind: &str, s: &str) -> Result<(), TargetError> {
    let bad = s.is_empty()
        || s.len() > 200
        || s == "."
        || s == ".."
        || s.starts_with('.')
        || s.chars().any(|c| c == '/' || c == '\\' || c.is_control());
    if bad {
        return Err(TargetError::Start(format!(
            "{kind} {s:?} cannot be used as a directory name (empty, too long, starts with a dot, or has a slash or control character)"
        )));
    }
    Ok(())
}

fn other(e: impl std::fmt::Display) -> TargetError {
    TargetError::Other(e.to_string())
}

fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Variables a replica gets from Ouro's own environment; nothing else leaks (Ouro's own
/// configuration may hold secrets).
fn base_env() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for k in ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"] {
        if let Ok(v) = std::env::var(k) {
            env.insert(k.to_string(), v);
        }
    }
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/bin:/usr/bin:/bin".into());
    env
}

impl Supervisor {
    /// `root` is DATA_DIR/deploy. Nothing starts until recover/start_version.
    pub fn new(root: PathBuf, options: SupervisorOptions) -> Arc<Supervisor> {
        if options.trusted_key.is_none() {
            tracing::warn!(
                "no trusted release key: bundles are checked against the key they carry (integrity, not origin)"
            );
        }
        Arc::new(Supervisor {
            root,
            shared: Arc::new(Shared {
                logs: LogStore::new(options.log_lines),
                options,
            }),
            versions: Mutex::new(BTreeMap::new()),
            ports: Mutex::new(BTreeSet::new()),
            version_locks: Mutex::new(HashMap::new()),
        })
    }

    /// The directory everything lives under (`DATA_DIR/deploy`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn version_dir(&self, p: &str, e: &str, s: &str, v: &str) -> PathBuf {
        self.root.join(p).join(e).join(s).join(v)
    }

    fn version_lock(&self, key: &VersionKey) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.version_locks)
            .entry(key.clone())
            .or_default()
            .clone()
    }

    fn replicas_of(&self, key: &VersionKey) -> Vec<Arc<Replica>> {
        let v = lock(&self.versions).get(key).cloned();
        v.map(|v| lock(&v.replicas).values().cloned().collect())
            .unwrap_or_default()
    }

    /// After an Ouro restart: re-adopts every replica recorded under root that is still alive
    /// (never starting a second copy), restarts the recorded ones that died, and kills what is
    /// left of versions that were being stopped. Returns what it did.
    pub async fn recover(self: &Arc<Self>) -> Result<RecoverReport, TargetError> {
        let mut report = RecoverReport::default();
        for service_dir in dirs_at_depth(&self.root, 3) {
            if let Err(e) = remove_trash(&service_dir) {
                report.errors.push(format!(
                    "{}: removing an interrupted removal failed: {e}",
                    service_dir.display()
                ));
            }
        }
        for vdir in version_dirs(&self.root) {
            let recorded = vdir.join(VERSION_FILE);
            let rv: RecordedVersion = match fs::read(&recorded) {
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(rv) => rv,
                    Err(e) => {
                        report
                            .errors
                            .push(format!("{}: unreadable: {e}", recorded.display()));
                        continue;
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Not desired any more: whatever still runs is a leftover of an interrupted
                    // stop, whose grace has passed.
                    report.killed.extend(kill_leftovers(&vdir, None).await);
                    continue;
                }
                Err(e) => {
                    report
                        .errors
                        .push(format!("{}: unreadable: {e}", recorded.display()));
                    continue;
                }
            };
            let spec = VersionSpec {
                project: rv.project,
                environment: rv.environment,
                service: rv.service,
                version: rv.version,
                bundle: rv.bundle,
                env: rv.env,
            };
            let prefix = format!("{}/{}/", spec.project, spec.environment);
            match self.launch(&spec).await {
                Ok(done) => {
                    for (id, how) in done {
                        match how {
                            Launched::Adopted => report.adopted.push(format!("{prefix}{id}")),
                            Launched::Started => report.restarted.push(format!("{prefix}{id}")),
                            Launched::Kept => {}
                        }
                    }
                }
                Err(e) => report.errors.push(format!(
                    "{prefix}{}/{}: {e}",
                    spec.service.name, spec.version
                )),
            }
        }
        Ok(report)
    }

    /// Verifies and unpacks the bundle (idempotent), starts `spec.service.replicas` replicas of
    /// the version (idempotent: running ones are kept) and returns their upstreams, whose ready
    /// flag the readiness probe drives.
    pub async fn start_version(
        self: &Arc<Self>,
        spec: &VersionSpec,
    ) -> Result<Vec<Arc<Upstream>>, TargetError> {
        self.launch(spec).await?;
        Ok(self.upstreams(
            &spec.project,
            &spec.environment,
            &spec.service.name,
            &spec.version,
        ))
    }

    /// Starts every replica of a version, adopting those still alive from an earlier Ouro.
    async fn launch(
        self: &Arc<Self>,
        spec: &VersionSpec,
    ) -> Result<Vec<(String, Launched)>, TargetError> {
        check_name("project", &spec.project)?;
        check_name("environment", &spec.environment)?;
        check_name("service", &spec.service.name)?;
        check_name("version", &spec.version)?;
        let key: VersionKey = (
            spec.project.clone(),
            spec.environment.clone(),
            spec.service.name.clone(),
            spec.version.clone(),
        );
        let vlock = self.version_lock(&key);
        let _serial = vlock.lock().await;
        let vdir = self.version_dir(
            &spec.project,
            &spec.environment,
            &spec.service.name,
            &spec.version,
        );
        let (bundle, dir, key_opt) = (
            spec.bundle.clone(),
            vdir.clone(),
            self.shared.options.trusted_key,
        );
        let files_dir = match unpack::unpacked_files(&vdir) {
            // Verified when it was unpacked; the bundle may have been a temporary export that is
            // gone after an Ouro restart, which must not keep its replicas from being recovered.
            Some(files) if !spec.bundle.exists() => files,
            _ => {
                tokio::task::spawn_blocking(move || unpack::unpack(&bundle, &dir, key_opt.as_ref()))
                    .await
                    .map_err(other)??
                    .files_dir
            }
        };
        let recorded = RecordedVersion {
            project: spec.project.clone(),
            environment: spec.environment.clone(),
            version: spec.version.clone(),
            bundle: spec.bundle.clone(),
            env: spec.env.clone(),
            service: spec.service.clone(),
        };
        let json = serde_json::to_vec_pretty(&recorded).map_err(other)?;
        unpack::write_atomic(&vdir.join(VERSION_FILE), &json).map_err(other)?;
        let started_ms = ouro_core::time::now_ms().to_string();
        unpack::write_atomic(&vdir.join(LAST_STARTED), started_ms.as_bytes()).map_err(other)?;
        let mut env = spec.service.env.clone();
        env.extend(spec.env.clone());
        let run = Arc::new(RunSpec {
            project: spec.project.clone(),
            environment: spec.environment.clone(),
            version: spec.version.clone(),
            service: spec.service.clone(),
            files_dir,
            version_dir: vdir,
            env,
        });
        let vr = lock(&self.versions)
            .entry(key)
            .or_insert_with(|| {
                Arc::new(VersionRun {
                    replicas: Mutex::new(BTreeMap::new()),
                })
            })
            .clone();
        let mut done = Vec::new();
        let want = spec.service.replicas;
        for index in 0..want {
            let existing = lock(&vr.replicas).get(&index).cloned();
            if let Some(r) = existing {
                let finished = lock(&r.task).as_ref().is_none_or(|t| t.is_finished());
                if !finished {
                    done.push((r.id.clone(), Launched::Kept));
                    continue;
                }
                // Failed for good (or its supervision ended): give it a fresh start, same port.
                {
                    let mut s = lock(&r.state);
                    s.phase = Phase::Starting;
                    s.pid = None;
                }
                r.stop_tx.send_replace(false);
                let task = tokio::spawn(supervise(self.shared.clone(), r.clone(), Begin::Spawn));
                *lock(&r.task) = Some(task);
                done.push((r.id.clone(), Launched::Started));
                continue;
            }
            let (r, begin) = self.new_replica(&run, index).await?;
            let how = match begin {
                Begin::Adopt { .. } => Launched::Adopted,
                Begin::Spawn => Launched::Started,
            };
            let task = tokio::spawn(supervise(self.shared.clone(), r.clone(), begin));
            *lock(&r.task) = Some(task);
            lock(&vr.replicas).insert(index, r.clone());
            done.push((r.id.clone(), how));
        }
        // Fewer replicas than before: stop the extra ones.
        let extra: Vec<Arc<Replica>> = {
            let mut reps = lock(&vr.replicas);
            let keys: Vec<u32> = reps.range(want..).map(|(k, _)| *k).collect();
            keys.iter().filter_map(|k| reps.remove(k)).collect()
        };
        for r in extra {
            self.stop_replica(&r).await;
        }
        Ok(done)
    }

    /// Builds a replica: its port (recorded, or a new one) and whether its process is adopted.
    async fn new_replica(
        &self,
        run: &Arc<RunSpec>,
        index: u32,
    ) -> Result<(Arc<Replica>, Begin), TargetError> {
        let dir = run.version_dir.join(REPLICAS).join(index.to_string());
        fs::create_dir_all(&dir).map_err(other)?;
        let record: Option<ReplicaRecord> = fs::read(dir.join(STATE_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let lock_path = dir.join(LOCK_FILE);
        let mut begin = Begin::Spawn;
        let mut port = None;
        if let Some(rec) = &record {
            let same = process::is_same_process(rec.pid, rec.start_time);
            // The lock says whether anything of the replica lives without trusting the pid;
            // the pid and its start time say whether it is still the process that was started.
            let alive = same || process::lock_held(&lock_path);
            if same {
                begin = Begin::Adopt {
                    pid: rec.pid,
                    start_time: rec.start_time,
                };
                port = Some(rec.port);
            } else if alive {
                // The main process is gone but something it started holds on (the group id
                // cannot be reused while members live): kill it, never run a second copy.
                process::signal_group(rec.pid, libc::SIGKILL);
                if !process::wait_gone(rec.pid, &lock_path, KILL_WAIT).await {
                    return Err(TargetError::Start(format!(
                        "{}/{}/{index}: an earlier process of the replica (group {}) did not exit after SIGKILL",
                        run.service.name, run.version, rec.pid
                    )));
                }
            }
            if port.is_none() && lock(&self.ports).insert(rec.port) {
                // Keep the replica's port across Ouro restarts when it is still free.
                if process::port_free(rec.port) {
                    port = Some(rec.port);
                } else {
                    lock(&self.ports).remove(&rec.port);
                }
            } else if port.is_some() {
                lock(&self.ports).insert(rec.port);
            }
        }
        let port = match port {
            Some(p) => p,
            None => self.allocate_port(&run.service.port, index)?,
        };
        let id = format!("{}/{}/{index}", run.service.name, run.version);
        let mut env = base_env();
        env.extend(run.env.clone());
        env.insert("PORT".into(), port.to_string());
        env.insert("OURO_SERVICE".into(), run.service.name.clone());
        env.insert("OURO_VERSION".into(), run.version.clone());
        env.insert("OURO_ENVIRONMENT".into(), run.environment.clone());
        env.insert("OURO_REPLICA".into(), index.to_string());
        let tailer = Tailer::new(
            &dir.join(STDOUT_LOG),
            &dir.join(STDERR_LOG),
            self.shared.options.log_file_max_bytes,
            // Earlier output was read by an earlier Ouro (or is history): it stays on disk, and
            // stamping it with today's time would be wrong.
            true,
        );
        let r = Arc::new(Replica {
            // The proxy's numbers and metrics are per service label: qualified with project
            // and environment, since two environments may run the same version side by side.
            upstream: Upstream::new(
                &crate::local_target::qualified(
                    &format!("{}/{}", run.project, run.environment),
                    &run.service.name,
                ),
                &run.version,
                index,
                SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            ),
            id,
            index,
            run: run.clone(),
            port,
            dir,
            env,
            state: Mutex::new(ReplicaState {
                phase: Phase::Starting,
                pid: match begin {
                    Begin::Adopt { pid, .. } => Some(pid),
                    Begin::Spawn => None,
                },
                restarts: 0,
                last_exit: None,
                ever_ready: false,
                last_probe_error: None,
            }),
            stop_tx: watch::channel(false).0,
            task: Mutex::new(None),
            tailer: Mutex::new(tailer),
        });
        Ok((r, begin))
    }

    /// `Port::Auto`: a free loopback port. `Port::From(n)`: the first free slot from n.
    fn allocate_port(&self, port: &Port, index: u32) -> Result<u16, TargetError> {
        let mut taken = lock(&self.ports);
        match port {
            Port::Auto => {
                for _ in 0..64 {
                    let p = process::free_port().map_err(other)?;
                    if taken.insert(p) {
                        return Ok(p);
                    }
                }
                Err(TargetError::Start("no free loopback port was found".into()))
            }
            Port::From(first) => {
                for p in *first..=u16::MAX {
                    if !taken.contains(&p) && process::port_free(p) {
                        taken.insert(p);
                        return Ok(p);
                    }
                }
                Err(TargetError::Start(format!(
                    "replica {index}: no free port from {first} up"
                )))
            }
        }
    }

    pub async fn wait_ready(
        &self,
        project: &str,
        environment: &str,
        service: &str,
        version: &str,
        timeout: Duration,
    ) -> Result<(), TargetError> {
        let key: VersionKey = (
            project.into(),
            environment.into(),
            service.into(),
            version.into(),
        );
        let deadline = Instant::now() + timeout;
        loop {
            let reps = self.replicas_of(&key);
            if reps.is_empty() {
                return Err(TargetError::NotReady(format!(
                    "{service} {version} is not running in {project}/{environment} (start it first)"
                )));
            }
            if let Some(r) = reps.iter().find(|r| r.phase() == Phase::Failed) {
                return Err(TargetError::NotReady(self.failure_message(r)));
            }
            if reps.iter().all(|r| r.upstream.is_ready()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let waiting: Vec<String> = reps
                    .iter()
                    .filter(|r| !r.upstream.is_ready())
                    .map(|r| {
                        let s = lock(&r.state);
                        let mut m = format!("{} is {}", r.id, r.health_locked(&s));
                        if let Some(e) = &s.last_probe_error {
                            m.push_str(&format!(" (last probe: {e})"));
                        }
                        if let Some(e) = &s.last_exit {
                            m.push_str(&format!(" (last exit: {e})"));
                        }
                        m
                    })
                    .collect();
                return Err(TargetError::NotReady(format!(
                    "{service} {version} in {project}/{environment} is not ready after {}: {}",
                    fmt_duration(timeout),
                    waiting.join("; ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn failure_message(&self, r: &Replica) -> String {
        let o = &self.shared.options;
        let (restarts, last_exit) = {
            let s = lock(&r.state);
            (s.restarts, s.last_exit.clone())
        };
        let lines = self.shared.logs.tail(&r.service_key(), Some(&r.id), 10);
        let mut m = format!(
            "replica {} failed: started more than {} times within {} ({} restarts); last exit: {}",
            r.id,
            o.start_limit,
            fmt_duration(o.start_window),
            restarts,
            last_exit.as_deref().unwrap_or("unknown")
        );
        if !lines.is_empty() {
            m.push_str("; last log lines:");
            for l in lines {
                m.push_str(&format!("\n  [{}] {}", l.stream.as_str(), l.text));
            }
        }
        m
    }

    /// Stops every replica of a version: the service's stop signal to each process group, the
    /// grace period, then SIGKILL. Idempotent; works for a version recorded by an earlier Ouro
    /// that was not recovered too.
    pub async fn stop_version(
        &self,
        project: &str,
        environment: &str,
        service: &str,
        version: &str,
    ) -> Result<(), TargetError> {
        check_name("project", project)?;
        check_name("environment", environment)?;
        check_name("service", service)?;
        check_name("version", version)?;
        let key: VersionKey = (
            project.into(),
            environment.into(),
            service.into(),
            version.into(),
        );
        let vlock = self.version_lock(&key);
        let _serial = vlock.lock().await;
        let vdir = self.version_dir(project, environment, service, version);
        let recorded_stop = fs::read(vdir.join(VERSION_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<RecordedVersion>(&b).ok())
            .map(|rv| rv.service.stop);
        // The desired state goes first: an Ouro that dies now must not bring the version back.
        match fs::remove_file(vdir.join(VERSION_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(other(e)),
        }
        let vr = lock(&self.versions).remove(&key);
        if let Some(vr) = vr {
            let reps: Vec<Arc<Replica>> = lock(&vr.replicas).values().cloned().collect();
            futures::future::join_all(reps.iter().map(|r| self.stop_replica(r))).await;
        }
        // Whatever an earlier Ouro left running for this version (not recovered here).
        kill_leftovers(&vdir, Some(&recorded_stop.unwrap_or_default())).await;
        Ok(())
    }

    async fn stop_replica(&self, r: &Arc<Replica>) {
        r.stop_tx.send_replace(true);
        let task = lock(&r.task).take();
        if let Some(t) = task {
            let _ = t.await;
        }
        r.set_phase(Phase::Stopped);
        r.upstream.set_ready(false);
        let _ = fs::remove_file(r.dir.join(STATE_FILE));
        lock(&self.ports).remove(&r.port);
    }

    pub fn upstreams(
        &self,
        project: &str,
        environment: &str,
        service: &str,
        version: &str,
    ) -> Vec<Arc<Upstream>> {
        let key: VersionKey = (
            project.into(),
            environment.into(),
            service.into(),
            version.into(),
        );
        self.replicas_of(&key)
            .iter()
            .map(|r| r.upstream.clone())
            .collect()
    }

    /// The upstreams of the replicas of a version whose index is in `indices`.
    pub fn upstreams_in(
        &self,
        project: &str,
        environment: &str,
        service: &str,
        version: &str,
        indices: std::ops::Range<u32>,
    ) -> Vec<Arc<Upstream>> {
        let key: VersionKey = (
            project.into(),
            environment.into(),
            service.into(),
            version.into(),
        );
        self.replicas_of(&key)
            .iter()
            .filter(|r| indices.contains(&r.index))
            .map(|r| r.upstream.clone())
            .collect()
    }

    /// Runs exactly `replicas` replicas of a version started before (its recorded desired
    /// state): missing ones start, those with an index of `replicas` or more stop. 0 stops the
    /// version.
    pub async fn scale_version(
        self: &Arc<Self>,
        project: &str,
        environment: &str,
        service: &str,
        version: &str,
        replicas: u32,
    ) -> Result<(), TargetError> {
        if replicas == 0 {
            return self
                .stop_version(project, environment, service, version)
                .await;
        }
        check_name("project", project)?;
        check_name("environment", environment)?;
        check_name("service", service)?;
        check_name("version", version)?;
        let recorded = self
            .version_dir(project, environment, service, version)
            .join(VERSION_FILE);
        let rv: RecordedVersion = match fs::read(&recorded) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| other(format!("{}: unreadable: {e}", recorded.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TargetError::Start(format!(
                    "{service} {version} is not running in {project}/{environment}: start it before scaling it"
                )));
            }
            Err(e) => return Err(other(e)),
        };
        let mut spec = VersionSpec {
            project: rv.project,
            environment: rv.environment,
            service: rv.service,
            version: rv.version,
            bundle: rv.bundle,
            env: rv.env,
        };
        spec.service.replicas = replicas;
        self.launch(&spec).await.map(|_| ())
    }

    /// Removes the unpacked directories of a service's versions in an environment beyond the
    /// newest `keep` (by when they were last started), except the versions in `protected` and
    /// any version that is desired (recorded to run), supervised here, or has a replica process
    /// alive. A directory is renamed to `.<version>.trash` before it is deleted, so a crash in
    /// between leaves nothing that looks like a version; [`Supervisor::recover`] finishes it.
    /// Returns the versions removed, oldest first.
    pub async fn prune(
        &self,
        project: &str,
        environment: &str,
        service: &str,
        keep: usize,
        protected: &[String],
    ) -> Result<Vec<String>, TargetError> {
        check_name("project", project)?;
        check_name("environment", environment)?;
        check_name("service", service)?;
        let service_dir = self.root.join(project).join(environment).join(service);
        remove_trash(&service_dir).map_err(other)?;
        let mut versions: Vec<(i64, String)> = Vec::new();
        let rd = match fs::read_dir(&service_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(other(e)),
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            versions.push((last_started(&e.path()), name));
        }
        // Newest first; equal times by name so the order is stable.
        versions.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
        let mut removed = Vec::new();
        for (_, version) in versions.into_iter().skip(keep) {
            if protected.contains(&version) {
                continue;
            }
            let key: VersionKey = (
                project.into(),
                environment.into(),
                service.into(),
                version.clone(),
            );
            // Under the version's lock: a start of this version waits, and sees no directory.
            let vlock = self.version_lock(&key);
            let _serial = vlock.lock().await;
            let vdir = service_dir.join(&version);
            let supervised = lock(&self.versions).contains_key(&key);
            if supervised || vdir.join(VERSION_FILE).exists() || any_replica_alive(&vdir) {
                continue;
            }
            let trash = service_dir.join(format!(".{version}{TRASH_SUFFIX}"));
            fs::rename(&vdir, &trash).map_err(other)?;
            tokio::task::spawn_blocking(move || fs::remove_dir_all(&trash))
                .await
                .map_err(other)?
                .map_err(other)?;
            removed.push(version);
        }
        removed.reverse();
        Ok(removed)
    }

    /// Every replica of the service in the environment, all versions.
    pub fn status(&self, project: &str, environment: &str, service: &str) -> Vec<ReplicaStatus> {
        let versions: Vec<Arc<VersionRun>> = lock(&self.versions)
            .iter()
            .filter(|(k, _)| k.0 == project && k.1 == environment && k.2 == service)
            .map(|(_, v)| v.clone())
            .collect();
        let mut out = Vec::new();
        for v in versions {
            for r in lock(&v.replicas).values() {
                let health = r.health();
                let s = lock(&r.state);
                out.push(ReplicaStatus {
                    replica: r.id.clone(),
                    version: r.run.version.clone(),
                    health: health.into(),
                    restarts: s.restarts,
                    in_flight: r.upstream.in_flight(),
                    address: r.upstream.addr.to_string(),
                    pid: s.pid,
                });
            }
        }
        out
    }

    /// Recent log lines (timestamp, replica id, stream, text), newest last.
    pub fn logs(
        &self,
        project: &str,
        environment: &str,
        service: &str,
        tail: usize,
    ) -> Vec<LogLine> {
        self.shared.logs.tail(
            &(project.into(), environment.into(), service.into()),
            None,
            tail,
        )
    }
}

impl Replica {
    fn health_locked(&self, s: &ReplicaState) -> &'static str {
        match s.phase {
            Phase::Running if self.upstream.is_ready() => "ready",
            Phase::Running if s.ever_ready => "unready",
            Phase::Running | Phase::Starting => "starting",
            Phase::Restarting => "restarting",
            Phase::Failed => "failed",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Launched {
    Kept,
    Adopted,
    Started,
}

enum Begin {
    Spawn,
    Adopt { pid: u32, start_time: u64 },
}

/// The version directories under root (four levels: project, environment, service, version).
fn version_dirs(root: &Path) -> Vec<PathBuf> {
    dirs_at_depth(root, 4)
}

/// When a version directory's version was last started (ms), for retention's order: the
/// recorded time, else the directory's modification time, else 0.
fn last_started(vdir: &Path) -> i64 {
    if let Some(ms) = fs::read_to_string(vdir.join(LAST_STARTED))
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok())
    {
        return ms;
    }
    fs::metadata(vdir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whether any recorded replica process of a version directory still holds its lock (it may
/// be running from the directory's files even when no Ouro supervises it).
fn any_replica_alive(vdir: &Path) -> bool {
    let Ok(rd) = fs::read_dir(vdir.join(REPLICAS)) else {
        return false;
    };
    rd.flatten()
        .any(|e| process::lock_held(&e.path().join(LOCK_FILE)))
}

/// Deletes what an interrupted [`Supervisor::prune`] left in a service directory.
fn remove_trash(service_dir: &Path) -> std::io::Result<()> {
    let rd = match fs::read_dir(service_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(TRASH_SUFFIX) {
            fs::remove_dir_all(e.path())?;
        }
    }
    Ok(())
}

/// The directories `depth` levels under root (hidden names skipped).
fn dirs_at_depth(root: &Path, depth: usize) -> Vec<PathBuf> {
    let mut level = vec![root.to_path_buf()];
    for _ in 0..depth {
        let mut next = Vec::new();
        for d in level {
            if let Ok(rd) = fs::read_dir(&d) {
                for e in rd.flatten() {
                    let name = e.file_name();
                    let hidden = name.to_string_lossy().starts_with('.');
                    if !hidden && e.file_type().is_ok_and(|t| t.is_dir()) {
                        next.push(e.path());
                    }
                }
            }
        }
        level = next;
    }
    level.sort();
    level
}

/// Stops every recorded replica process of a version directory that still runs (`stop`'s signal
/// and grace, then SIGKILL to the group; SIGKILL at once without `stop`) and removes the
/// records. Returns the replicas stopped.
async fn kill_leftovers(vdir: &Path, stop: Option<&Stop>) -> Vec<String> {
    let mut killed = Vec::new();
    let Ok(rd) = fs::read_dir(vdir.join(REPLICAS)) else {
        return killed;
    };
    for e in rd.flatten() {
        let state = e.path().join(STATE_FILE);
        let Some(rec) = fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice::<ReplicaRecord>(&b).ok())
        else {
            continue;
        };
        let lock_path = e.path().join(LOCK_FILE);
        if process::is_same_process(rec.pid, rec.start_time) || process::lock_held(&lock_path) {
            let graceful = match stop {
                Some(st) => {
                    process::signal_group(rec.pid, st.signal_number());
                    process::wait_gone(rec.pid, &lock_path, Duration::from_millis(st.grace_ms))
                        .await
                }
                None => false,
            };
            if !graceful {
                process::signal_group(rec.pid, libc::SIGKILL);
                process::wait_gone(rec.pid, &lock_path, KILL_WAIT).await;
            }
            killed.push(format!(
                "{}/{}/{}/{}/{}",
                rec.project, rec.environment, rec.service, rec.version, rec.index
            ));
        }
        let _ = fs::remove_file(&state);
    }
    killed
}

/// A replica process being supervised: spawned by this Ouro (`child`) or adopted.
struct Running {
    pid: u32,
    start_time: u64,
    child: Option<tokio::process::Child>,
}

enum Outcome {
    Stop,
    Exited(String),
    LivenessFailed(String),
}

fn write_record(r: &Replica, p: &Running) {
    let rec = ReplicaRecord {
        project: r.run.project.clone(),
        environment: r.run.environment.clone(),
        service: r.run.service.name.clone(),
        version: r.run.version.clone(),
        index: r.index,
        pid: p.pid,
        port: r.port,
        start_time: p.start_time,
    };
    let res = serde_json::to_vec_pretty(&rec)
        .map_err(std::io::Error::other)
        .and_then(|b| unpack::write_atomic(&r.dir.join(STATE_FILE), &b));
    if let Err(e) = res {
        tracing::error!(replica = %r.id, error = %e, "writing the replica's state file failed");
    }
}

fn spawn_process(r: &Replica) -> std::io::Result<Running> {
    let Spawned {
        child,
        pid,
        start_time,
    } = process::spawn(&process::Launch {
        run: &r.run.service.run,
        dir: &r.run.files_dir,
        env: &r.env,
        resources: &r.run.service.resources,
        lock_path: &r.lock_path(),
        stdout_path: &r.dir.join(STDOUT_LOG),
        stderr_path: &r.dir.join(STDERR_LOG),
    })?;
    Ok(Running {
        pid,
        start_time,
        child: Some(child),
    })
}

/// The life of one replica: start (or adopt), watch, restart with backoff, give up at the start
/// limit, stop when asked.
async fn supervise(sh: Arc<Shared>, r: Arc<Replica>, begin: Begin) {
    let o = sh.options.clone();
    let mut stop_rx = r.stop_tx.subscribe();
    let tail_task = {
        let (sh, r) = (sh.clone(), r.clone());
        AbortOnDrop::spawn(async move {
            loop {
                sh.read_logs(&r, false);
                tokio::time::sleep(sh.options.poll_interval).await;
            }
        })
    };
    let mut starts: VecDeque<Instant> = VecDeque::new();
    let mut backoff = o.backoff_initial;
    let mut begin = Some(begin);
    loop {
        if r.stop_requested() {
            break;
        }
        let adopted = matches!(begin, Some(Begin::Adopt { .. }));
        let mut proc = match begin.take() {
            Some(Begin::Adopt { pid, start_time }) => Running {
                pid,
                start_time,
                child: None,
            },
            _ => {
                starts.push_back(Instant::now());
                match spawn_process(&r) {
                    Ok(p) => p,
                    Err(e) => {
                        let why = format!("could not start: {e}");
                        sh.event(&r, why.clone());
                        lock(&r.state).last_exit = Some(why);
                        match next_attempt(&sh, &r, &mut starts, &mut backoff, &mut stop_rx).await {
                            true => continue,
                            false => break,
                        }
                    }
                }
            }
        };
        write_record(&r, &proc);
        {
            let mut s = lock(&r.state);
            s.phase = Phase::Running;
            s.pid = Some(proc.pid);
        }
        sh.event(
            &r,
            if adopted {
                format!("adopted pid {} on port {}", proc.pid, r.port)
            } else {
                format!("started pid {} on port {}", proc.pid, r.port)
            },
        );
        let started = Instant::now();
        let outcome = watch_process(&sh, &r, &mut proc, &mut stop_rx).await;
        r.upstream.set_ready(false);
        match outcome {
            Outcome::Stop => {
                terminate(&sh, &r, &mut proc).await;
                break;
            }
            Outcome::Exited(status) => {
                // What is left of its group (children it forked) goes with it. The leader is
                // reaped, so its number is only still this group's while members live.
                if process::group_alive(proc.pid) {
                    process::signal_group(proc.pid, libc::SIGKILL);
                }
                process::wait_gone(proc.pid, &r.lock_path(), KILL_WAIT).await;
                sh.read_logs(&r, true);
                sh.event(&r, format!("exited: {status}"));
                lock(&r.state).last_exit = Some(status);
            }
            Outcome::LivenessFailed(why) => {
                sh.event(&r, format!("liveness probe failed: {why}; restarting"));
                terminate(&sh, &r, &mut proc).await;
                lock(&r.state).last_exit =
                    Some(format!("killed after failing its liveness probe ({why})"));
            }
        }
        if r.stop_requested() {
            break;
        }
        if started.elapsed() >= o.start_window {
            // It ran well for a while: the next crash is not part of a crash loop.
            backoff = o.backoff_initial;
        }
        if !next_attempt(&sh, &r, &mut starts, &mut backoff, &mut stop_rx).await {
            break;
        }
    }
    tail_task.finish().await;
    sh.read_logs(&r, true);
    let mut s = lock(&r.state);
    if s.phase != Phase::Failed {
        s.phase = Phase::Stopped;
        drop(s);
        sh.event(&r, "stopped".into());
    }
}

/// After an exit: gives up at the start limit (false), else waits the backoff (false when a
/// stop came meanwhile) and doubles it.
async fn next_attempt(
    sh: &Shared,
    r: &Replica,
    starts: &mut VecDeque<Instant>,
    backoff: &mut Duration,
    stop_rx: &mut watch::Receiver<bool>,
) -> bool {
    let o = &sh.options;
    let now = Instant::now();
    while starts
        .front()
        .is_some_and(|t| now.duration_since(*t) > o.start_window)
    {
        starts.pop_front();
    }
    if starts.len() as u32 >= o.start_limit {
        // The event first: whoever sees the phase (wait_ready) reads the log right after.
        sh.event(
            r,
            format!(
                "failed: started {} times within {} (start limit {}); not restarted again",
                starts.len(),
                fmt_duration(o.start_window),
                o.start_limit
            ),
        );
        lock(&r.state).phase = Phase::Failed;
        return false;
    }
    {
        let mut s = lock(&r.state);
        s.phase = Phase::Restarting;
        s.restarts += 1;
        s.pid = None;
    }
    sh.event(r, format!("restarting in {}", fmt_duration(*backoff)));
    let wait = *backoff;
    *backoff = (*backoff * 2).min(o.backoff_max);
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = stop_rx.wait_for(|s| *s) => false,
    }
}

/// Waits for the process to exit, its liveness probe to fail, or a stop request; meanwhile the
/// readiness probe drives the upstream's ready flag.
async fn watch_process(
    sh: &Arc<Shared>,
    r: &Arc<Replica>,
    proc: &mut Running,
    stop_rx: &mut watch::Receiver<bool>,
) -> Outcome {
    let started = Instant::now();
    r.upstream.set_ready(false);
    let readiness_task = {
        let (sh, r) = (sh.clone(), r.clone());
        AbortOnDrop::spawn(async move { readiness(&sh, &r, started).await })
    };
    let liveness = async {
        match &r.run.service.health.liveness {
            Some(p) => run_probe(r, p, true, started, |_, _| {}).await,
            None => std::future::pending().await,
        }
    };
    let poll = sh.options.poll_interval;
    let exit = async {
        match proc.child.as_mut() {
            Some(child) => match child.wait().await {
                Ok(st) => st.to_string(),
                Err(e) => format!("unknown ({e})"),
            },
            None => loop {
                tokio::time::sleep(poll).await;
                if !process::is_same_process(proc.pid, proc.start_time) {
                    break "exited (status unknown: the process was adopted after an Ouro restart)"
                        .to_string();
                }
            },
        }
    };
    let outcome = tokio::select! {
        status = exit => Outcome::Exited(status),
        why = liveness => Outcome::LivenessFailed(why),
        _ = stop_rx.wait_for(|s| *s) => Outcome::Stop,
    };
    readiness_task.finish().await;
    r.upstream.set_ready(false);
    outcome
}

/// Drives the ready flag: by the readiness probe, or (without one) once the port accepts
/// connections.
async fn readiness(sh: &Shared, r: &Replica, started: Instant) {
    match &r.run.service.health.readiness {
        Some(p) => {
            run_probe(r, p, false, started, |ready, why| {
                if ready {
                    lock(&r.state).ever_ready = true;
                }
                r.upstream.set_ready(ready);
                if ready {
                    sh.event(r, "ready".into());
                } else {
                    sh.event(
                        r,
                        format!("not ready: {}", why.unwrap_or("readiness probe failed")),
                    );
                }
            })
            .await;
        }
        None => loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", r.port))
                .await
                .is_ok()
            {
                lock(&r.state).ever_ready = true;
                r.upstream.set_ready(true);
                sh.event(r, "ready (its port accepts connections)".into());
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        },
    }
}

/// Runs a probe every interval; `on_change` hears each change of state. A liveness probe returns
/// the failure once the replica counts as unhealthy; a readiness probe never returns.
async fn run_probe(
    r: &Replica,
    p: &Probe,
    liveness: bool,
    started: Instant,
    mut on_change: impl FnMut(bool, Option<&str>),
) -> String {
    let mut t = probe::Tracker::new(p.success_threshold, p.failure_threshold, liveness);
    let target = probe::CheckTarget {
        port: r.port,
        dir: &r.run.files_dir,
        env: &r.env,
    };
    let timeout = Duration::from_millis(p.timeout_ms.max(1));
    let interval = Duration::from_millis(p.interval_ms.max(10));
    let start_period = Duration::from_millis(p.start_period_ms);
    loop {
        let res = probe::check(&p.check, &target, timeout).await;
        let in_start = started.elapsed() < start_period;
        if let Err(e) = &res {
            lock(&r.state).last_probe_error = Some(e.clone());
        }
        if let Some(healthy) = t.record(res.is_ok(), in_start) {
            on_change(healthy, res.as_ref().err().map(String::as_str));
            if liveness && !healthy {
                return res.err().unwrap_or_default();
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Stops a running replica: its stop signal to the group, the grace period, SIGKILL.
async fn terminate(sh: &Shared, r: &Replica, proc: &mut Running) {
    let stop = &r.run.service.stop;
    r.set_phase(Phase::Stopping);
    let lock_path = r.lock_path();
    // Only a group that still has members: an empty group's number may belong to someone else.
    if process::is_same_process(proc.pid, proc.start_time) || process::group_alive(proc.pid) {
        process::signal_group(proc.pid, stop.signal_number());
    }
    let grace = Duration::from_millis(stop.grace_ms);
    if !process::wait_gone(proc.pid, &lock_path, grace).await {
        sh.event(
            r,
            format!(
                "still running {} after SIG{}: sending SIGKILL to its process group",
                fmt_duration(grace),
                stop.signal
            ),
        );
        process::signal_group(proc.pid, libc::SIGKILL);
        if !process::wait_gone(proc.pid, &lock_path, KILL_WAIT).await {
            sh.event(r, format!("process group {} survived SIGKILL", proc.pid));
        }
    }
    if let Some(child) = proc.child.as_mut() {
        // Reap it (it is gone; this does not block for long).
        let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
    }
}
