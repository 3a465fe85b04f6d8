//! Runs one claimed job on a runner (in-process or `ouro runner`): plan, decide, prepare, execute,
//! ship the masked log in chunks through the [`RunnerApi`], heartbeat, finish.
//!
//! Memory is bounded: the executor's event channel is small and bounded, output is masked into a
//! buffer shipped in chunks of at most [`CHUNK_BYTES`] (and every [`FLUSH_EVERY`] so the log is
//! live), one chunk in flight at a time (the executor waits meanwhile).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{
    ApiError, BoxFuture, CHUNK_BYTES, ClaimedJob, HEARTBEAT_EVERY, JobResult, RunnerApi,
    SectionMark,
};
use crate::exec::{Checkout, ExecEvent, Executor, JobContext, JobStatus};
use crate::mask::{Masker, SecretSet};
use crate::plan::{Decision, EventKind, JobState, Trigger};

/// Buffered output is shipped at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

fn state_of(s: &str) -> JobState {
    match s {
        "running" => JobState::Running,
        "success" => JobState::Success,
        "failure" => JobState::Failure,
        "cancelled" => JobState::Cancelled,
        "skipped" => JobState::Skipped,
        "timed_out" => JobState::TimedOut,
        _ => JobState::Queued,
    }
}

/// The planner's trigger for a claimed job: the run's trigger as stored with it.
pub fn trigger_of(job: &ClaimedJob) -> Trigger {
    let t = &job.trigger;
    Trigger {
        event: EventKind::parse(t.event.as_deref().unwrap_or(&t.kind)).unwrap_or(EventKind::Manual),
        git_ref: t.git_ref.clone(),
        branch: t.git_ref.strip_prefix("refs/heads/").map(String::from),
        tag: t.git_ref.strip_prefix("refs/tags/").map(String::from),
        target_branch: t.target_branch.clone(),
        sha: t.sha.clone(),
        changed_paths: None,
        inputs: t.inputs.clone(),
        actor: t.actor.clone(),
        project: job.project.clone(),
        repo: job.repo.clone(),
        run_number: job.run_number.max(0) as u64,
    }
}

fn now_ms() -> u64 {
    crate::logs::now_ms()
}

/// Ships the log of one attempt: offsets, chunks of at most [`CHUNK_BYTES`], retries of a
/// failed call.
struct Shipper<'a> {
    api: &'a dyn RunnerApi,
    job_id: i64,
    token: &'a str,
    offset: u64,
    buf: Vec<u8>,
}

/// Calls `call` until it succeeds, is refused as stale, or failed 8 times (with backoff).
async fn retrying<'b, T, F>(mut call: F) -> Result<T, ApiError>
where
    F: FnMut() -> BoxFuture<'b, Result<T, ApiError>>,
{
    let mut wait = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        match call().await {
            Err(ApiError::Failed(e)) if tries < 8 => {
                tracing::debug!(error = %e, "runner call failed; retrying");
                tries += 1;
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

impl<'a> Shipper<'a> {
    fn new(api: &'a dyn RunnerApi, job_id: i64, token: &'a str) -> Self {
        Shipper {
            api,
            job_id,
            token,
            offset: 0,
            buf: Vec::with_capacity(CHUNK_BYTES),
        }
    }

    /// Ships the full chunks buffered; with `all`, the rest too.
    async fn send(&mut self, all: bool) -> Result<(), ApiError> {
        while self.buf.len() >= CHUNK_BYTES || (all && !self.buf.is_empty()) {
            let rest = if self.buf.len() > CHUNK_BYTES {
                self.buf.split_off(CHUNK_BYTES)
            } else {
                Vec::with_capacity(CHUNK_BYTES)
            };
            let data = std::mem::replace(&mut self.buf, rest);
            let (api, id, token, offset) = (self.api, self.job_id, self.token, self.offset);
            retrying(|| api.append_log(id, token, offset, data.clone())).await?;
            self.offset += data.len() as u64;
        }
        Ok(())
    }

    /// Ships everything buffered.
    async fn ship(&mut self) -> Result<(), ApiError> {
        self.send(true).await
    }

    async fn mark(&mut self, mark: SectionMark) -> Result<(), ApiError> {
        self.ship().await?;
        let (api, id, token) = (self.api, self.job_id, self.token);
        retrying(|| api.section(id, token, mark.clone())).await
    }

    /// A line of the runner's own (not masked: it never holds secrets).
    async fn note(&mut self, text: &str) -> Result<(), ApiError> {
        self.buf.extend_from_slice(text.as_bytes());
        self.buf.push(b'\n');
        self.ship().await
    }
}

/// Masks the executor's output into the log and ships it until the executor is done: full
/// chunks at once, what is buffered at least every [`FLUSH_EVERY`], step marks after the output
/// before them.
async fn forward(
    ship: &mut Shipper<'_>,
    erx: &mut mpsc::Receiver<ExecEvent>,
    masker: &mut Masker,
) -> Result<(), ApiError> {
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            ev = erx.recv() => {
                let Some(ev) = ev else { break };
                match ev {
                    ExecEvent::Log { data, .. } => {
                        masker.push(&data, &mut ship.buf);
                        ship.send(false).await?;
                    }
                    ExecEvent::StepStarted { index, name } => {
                        masker.finish(&mut ship.buf);
                        ship.mark(SectionMark { step: index, kind: "start".into(), name: Some(name), exit_code: None }).await?;
                    }
                    ExecEvent::StepFinished { index, exit_code, .. } => {
                        masker.finish(&mut ship.buf);
                        ship.mark(SectionMark { step: index, kind: "end".into(), name: None, exit_code }).await?;
                    }
                    ExecEvent::StepSkipped { .. } => {}
                }
            }
            _ = flush.tick() => ship.ship().await?,
        }
    }
    masker.finish(&mut ship.buf);
    ship.ship().await
}

fn result(status: &str, exit_code: Option<i64>, reason: Option<String>, started: u64) -> JobResult {
    JobResult {
        status: status.into(),
        exit_code,
        reason,
        infra_failure: false,
        started_at_ms: started,
        finished_at_ms: now_ms(),
    }
}

/// Runs `job` with `ex`, the commit checked out from `checkout`, and reports everything through
/// `api`. Returns the result sent with `finish` (a stale attempt stops quietly).
pub async fn run_job(
    api: &dyn RunnerApi,
    ex: &dyn Executor,
    job: &ClaimedJob,
    checkout: Option<Checkout>,
) -> JobResult {
    run_job_then(api, ex, job, checkout, false).await.0
}

/// [`run_job`]; with `claim_next` the result is sent with [`RunnerApi::finish_and_claim`], and
/// the job the runner got with it is returned to run next in the same slot.
pub async fn run_job_then(
    api: &dyn RunnerApi,
    ex: &dyn Executor,
    job: &ClaimedJob,
    checkout: Option<Checkout>,
    claim_next: bool,
) -> (JobResult, Option<ClaimedJob>) {
    let started = now_ms();
    let mut ship = Shipper::new(api, job.job_id, &job.token);
    let outcome = execute(&mut ship, ex, job, checkout, started).await;
    let result = match outcome {
        Ok(r) => r,
        Err(ApiError::Stale) => {
            return (
                result("cancelled", None, Some("stale".into()), started),
                None,
            );
        }
        Err(ApiError::Failed(e)) => JobResult {
            infra_failure: true,
            ..result("failure", None, Some(format!("runner: {e}")), started)
        },
    };
    let token = job.token.as_str();
    let r = result.clone();
    let next = if claim_next {
        retrying(|| api.finish_and_claim(job.job_id, token, r.clone()))
            .await
            .ok()
            .flatten()
    } else {
        let _ = retrying(|| api.finish(job.job_id, token, r.clone())).await;
        None
    };
    (result, next)
}

async fn execute(
    ship: &mut Shipper<'_>,
    ex: &dyn Executor,
    job: &ClaimedJob,
    checkout: Option<Checkout>,
    started: u64,
) -> Result<JobResult, ApiError> {
    // Plan the job as the server did, from the pipeline file at the commit.
    let fail = |msg: String| result("failure", None, Some(msg), started);
    // Parsed and planned once per run (cached: the same inputs give the same plan).
    let parsed = super::cache::parsed(&job.file, &job.pipeline_file);
    let pipeline = match parsed.as_ref() {
        Ok(p) => p,
        Err(problems) => {
            let msg = format!(
                "{}: the pipeline file is invalid ({problems} problems)",
                job.file
            );
            ship.note(&msg).await?;
            return Ok(fail(msg));
        }
    };
    let planned = super::cache::planned(
        &job.pipeline,
        &job.file,
        &job.pipeline_file,
        pipeline,
        &trigger_of(job),
    );
    let plan = match planned.as_ref() {
        Ok(p) => p,
        Err(e) => {
            ship.note(e).await?;
            return Ok(fail(e.clone()));
        }
    };
    let Some(i) = plan.find(&job.job_key) else {
        let msg = format!("job `{}` is not in the pipeline", job.job_key);
        ship.note(&msg).await?;
        return Ok(fail(msg));
    };
    let states: Vec<JobState> = plan
        .jobs
        .iter()
        .map(|j| {
            job.needs
                .get(&j.id)
                .map_or(JobState::Queued, |s| state_of(s))
        })
        .collect();
    match plan.decide(i, &states, false) {
        Ok(Decision::Run) => {}
        Ok(Decision::Skip(why)) => {
            ship.note(&format!("skipped: {why}")).await?;
            return Ok(result("skipped", None, Some(why), started));
        }
        Ok(Decision::Cancel) => {
            return Ok(result("skipped", None, Some("cancelled".into()), started));
        }
        Err(e) => {
            ship.note(&e).await?;
            return Ok(fail(e));
        }
    }
    let ctx = plan
        .job_context(i, &states, false)
        .with_secrets(job.secrets.clone())
        .with_vars(job.variables.clone());
    let hooks = ship.api.job_hooks(job, &plan.jobs[i].spec, ctx.clone());
    let prepared = match crate::local::prepare(plan, i, &ctx, checkout) {
        Ok(p) => p,
        Err(e) => {
            ship.note(&e).await?;
            return Ok(fail(e));
        }
    };
    let mut spec = prepared.spec;
    spec.id = workspace_id(&job.job_key, job.job_id);
    for (k, v) in &job.variables {
        spec.env.entry(k.clone()).or_insert_with(|| v.clone());
    }
    // The job's own API token and where to send it (`ouro release create` in a step); masked.
    let job_token = super::job_api_token(job.job_id, &job.token);
    spec.env.insert("OURO_JOB_TOKEN".into(), job_token.clone());
    spec.env
        .insert("OURO_RUN_NUMBER".into(), job.run_number.to_string());
    spec.env.insert("OURO_PROJECT".into(), job.project.clone());
    spec.env.insert("OURO_REPO".into(), job.repo.clone());
    if let Some(url) = ship.api.server_url() {
        spec.env.insert("OURO_SERVER_URL".into(), url);
    }
    let masked = job.secrets.values().cloned().chain([job_token]);
    let secrets = SecretSet::new(masked).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "secrets cannot all be masked");
        SecretSet::empty()
    });

    // Heartbeats: extend the lease; a cancel (or a lost attempt) stops the job.
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let cancel_tx = Arc::new(cancel_tx);
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (api, job_id, token) = (ship.api, ship.job_id, ship.token.to_string());
    let heartbeats = async {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            match api.heartbeat(job_id, &token).await {
                Ok(false) => {}
                Ok(true) => {
                    let _ = cancel_tx.send(true);
                }
                Err(ApiError::Stale) => {
                    lost.store(true, std::sync::atomic::Ordering::SeqCst);
                    let _ = cancel_tx.send(true);
                }
                Err(ApiError::Failed(e)) => tracing::warn!(error = %e, "heartbeat failed"),
            }
        }
    };

    let (etx, mut erx) = mpsc::channel::<ExecEvent>(16);
    let jctx = JobContext {
        events: etx,
        cancel: cancel_rx,
        should_run: Some(prepared.hook),
        hooks,
    };
    let mut masker = Masker::new(secrets);
    let forward = forward(ship, &mut erx, &mut masker);
    let run = async {
        let (outcome, shipped) = tokio::join!(ex.run(&spec, jctx), forward);
        (outcome, shipped)
    };
    let (outcome, shipped) = tokio::select! {
        r = run => r,
        _ = heartbeats => unreachable!("heartbeats never end"),
    };
    if lost.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::Stale);
    }
    shipped?;
    Ok(match outcome {
        Ok(o) => {
            let (status, reason) = match o.status {
                JobStatus::Success => ("success", o.reason),
                JobStatus::Failure => (
                    "failure",
                    o.reason
                        .or_else(|| o.exit_code.map(|c| format!("exit code {c}"))),
                ),
                JobStatus::TimedOut => ("timed_out", o.reason.or(Some("timed out".into()))),
                JobStatus::Cancelled => ("cancelled", o.reason.or(Some("cancelled".into()))),
            };
            result(status, o.exit_code.map(i64::from), reason, started)
        }
        Err(e) => {
            let msg = format!("executor: {e}");
            ship.note(&msg).await?;
            JobResult {
                infra_failure: true,
                ..result("failure", None, Some(msg), started)
            }
        }
    })
}

/// A workspace name for the executor: the job key reduced to `[A-Za-z0-9._-]`, with the job id.
fn workspace_id(key: &str, job_id: i64) -> String {
    let mut s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    s = s.trim_start_matches('.').to_string();
    format!("j{job_id}-{s}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::StepStatus;
    use std::sync::Mutex;

    /// What the fake server saw, in order.
    #[derive(Debug, Clone, PartialEq)]
    enum Seen {
        Append { offset: u64, len: usize },
        Mark { kind: String, at: u64 },
    }

    /// A server that keeps the log and what it was sent.
    #[derive(Default)]
    struct FakeApi {
        seen: Mutex<Vec<Seen>>,
        log: Mutex<Vec<u8>>,
    }

    impl RunnerApi for FakeApi {
        fn claim(&self, _: Duration) -> BoxFuture<'_, Result<Option<ClaimedJob>, ApiError>> {
            Box::pin(async { Ok(None) })
        }
        fn heartbeat<'a>(&'a self, _: i64, _: &'a str) -> BoxFuture<'a, Result<bool, ApiError>> {
            Box::pin(async { Ok(false) })
        }
        fn append_log<'a>(
            &'a self,
            _: i64,
            _: &'a str,
            offset: u64,
            data: Vec<u8>,
        ) -> BoxFuture<'a, Result<(), ApiError>> {
            Box::pin(async move {
                let mut log = self.log.lock().unwrap();
                assert_eq!(
                    offset,
                    log.len() as u64,
                    "appends arrive in order, without gaps"
                );
                log.extend_from_slice(&data);
                self.seen.lock().unwrap().push(Seen::Append {
                    offset,
                    len: data.len(),
                });
                Ok(())
            })
        }
        fn section<'a>(
            &'a self,
            _: i64,
            _: &'a str,
            mark: SectionMark,
        ) -> BoxFuture<'a, Result<(), ApiError>> {
            Box::pin(async move {
                let at = self.log.lock().unwrap().len() as u64;
                self.seen.lock().unwrap().push(Seen::Mark {
                    kind: mark.kind,
                    at,
                });
                Ok(())
            })
        }
        fn finish<'a>(
            &'a self,
            _: i64,
            _: &'a str,
            _: JobResult,
        ) -> BoxFuture<'a, Result<(), ApiError>> {
            Box::pin(async { Ok(()) })
        }
    }

    /// Sends `events` through a channel of the worker's size into [`forward`].
    async fn pump(api: &FakeApi, events: Vec<ExecEvent>) {
        let (etx, mut erx) = mpsc::channel::<ExecEvent>(16);
        let producer = async move {
            for ev in events {
                etx.send(ev).await.expect("forward alive");
            }
        };
        let mut ship = Shipper::new(api, 1, "t");
        let mut masker = Masker::new(SecretSet::empty());
        let run = async {
            let ((), r) = tokio::join!(producer, forward(&mut ship, &mut erx, &mut masker));
            r
        };
        run.await.expect("shipped");
    }

    fn log(data: Vec<u8>) -> ExecEvent {
        ExecEvent::Log {
            step: Some(0),
            data,
        }
    }

    #[tokio::test]
    async fn no_chunk_is_larger_than_the_limit() {
        // Reads of 60 KiB used to leave up to twice the limit in one chunk.
        let api = FakeApi::default();
        let sizes = [
            60 * 1024,
            60 * 1024,
            1,
            200 * 1024,
            5,
            64 * 1024,
            64 * 1024 - 1,
        ];
        let mut want = Vec::new();
        let events: Vec<ExecEvent> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let data = vec![b'a' + i as u8; *n];
                want.extend_from_slice(&data);
                log(data)
            })
            .collect();
        pump(&api, events).await;
        assert_eq!(*api.log.lock().unwrap(), want);
        let seen = api.seen.lock().unwrap();
        assert!(seen.len() > 1);
        for s in seen.iter() {
            let Seen::Append { len, .. } = s else {
                panic!("no marks were sent: {s:?}")
            };
            assert!(*len <= CHUNK_BYTES && *len > 0, "chunk of {len} bytes");
        }
    }

    #[tokio::test]
    async fn step_marks_come_after_the_output_before_them() {
        let api = FakeApi::default();
        let events = vec![
            ExecEvent::StepStarted {
                index: 0,
                name: "one".into(),
            },
            log(vec![b'x'; 100 * 1024]),
            log(b"last line\n".to_vec()),
            ExecEvent::StepFinished {
                index: 0,
                status: StepStatus::Success,
                exit_code: Some(0),
                duration: Duration::ZERO,
            },
            log(b"after\n".to_vec()),
        ];
        pump(&api, events).await;
        let marks: Vec<Seen> = api
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| matches!(s, Seen::Mark { .. }))
            .cloned()
            .collect();
        let end = 100 * 1024 + 10;
        assert_eq!(
            marks,
            vec![
                Seen::Mark {
                    kind: "start".into(),
                    at: 0
                },
                Seen::Mark {
                    kind: "end".into(),
                    at: end
                }
            ]
        );
        assert_eq!(api.log.lock().unwrap().len() as u64, end + 6);
    }
}
