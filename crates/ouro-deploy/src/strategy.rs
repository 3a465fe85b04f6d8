//! The strategies, written once against [`Target`]: each moves one service of one environment
//! from the live version (if any) to a new one and reports every step to a [`Steps`] recorder.
//!
//! - `blue-green`: start the new version beside the old, wait until every new replica is ready,
//!   switch all traffic at once, drain the old version; the old one stays warm (the engine stops
//!   it after `keep_warm`) so a rollback is a switch back.
//! - `canary`: as blue-green up to ready, then the traffic share of the new version rises step
//!   by step; after each step's pause the new version's error rate and p99 (from the proxy) are
//!   judged against the thresholds and against the old version, and its replicas must have
//!   stayed up (no restart, none failed: this is what a target without traffic
//!   numbers, Kubernetes, is judged on); a failing check sends all traffic back, stops the new
//!   version and says which check failed with which numbers.
//! - `rolling`: replicas are replaced in batches within `max-surge` (extra replicas running)
//!   and `max-unavailable` (missing ready, routed replicas): start new ones, wait until they
//!   are ready, route to the ready replicas of both versions, take as many old ones out of the
//!   route, drain and stop them. A new replica that never gets ready brings the old version
//!   back to its full count and all traffic. Targets without replica batches
//!   ([`Target::replica_batches`]) start every new replica and shift traffic by weight.
//! - `recreate`: stop the old version, start the new one (requests fail in between).

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::spec::{Canary, Route, Strategy};
use crate::target::{Members, ReplicaStatus, Split, Target, VersionSpec, Window};

/// Records the steps of a deployment (the engine writes them to the database).
pub trait Steps: Send + Sync {
    fn record<'a>(
        &'a self,
        service: &'a str,
        name: &'a str,
        ok: bool,
        detail: Value,
        started_at: i64,
    ) -> BoxFuture<'a, ()>;
}

/// One service's move.
pub struct ServicePlan<'a> {
    pub new: &'a VersionSpec,
    /// The version that takes traffic now (running on the target), if any.
    pub old: Option<&'a str>,
    pub route: &'a Route,
    /// Overrides the service's strategy (a rollback is always a blue-green switch).
    pub strategy: Option<Strategy>,
}

#[derive(Clone, Debug)]
pub struct Options {
    /// How long the new replicas may take to become ready.
    pub ready_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ready_timeout: Duration::from_secs(120),
        }
    }
}

/// How one service's move ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Moved {
    /// The new version is live; the old one (if any) is still running and should be stopped
    /// after `keep_warm_ms` (0: already stopped or none).
    Live { keep_warm_ms: u64 },
    /// The new version never took traffic (or took it and went back, see `rolled_back`).
    Failed { reason: String, rolled_back: bool },
}

fn now() -> i64 {
    ouro_core::time::now_ms()
}

fn window_json(w: &Window) -> Value {
    json!({"requests": w.requests, "errors": w.errors,
           "error_rate": (w.error_rate * 10000.0).round() / 10000.0, "p99_ms": w.p99_ms})
}

/// A strategy's name as shown and stored.
pub fn name(s: &Strategy) -> &'static str {
    match s {
        Strategy::Recreate => "recreate",
        Strategy::Rolling { .. } => "rolling",
        Strategy::BlueGreen { .. } => "blue-green",
        Strategy::Canary(_) => "canary",
    }
}

/// Moves one service as its strategy says.
pub async fn run(
    target: &dyn Target,
    steps: &dyn Steps,
    plan: &ServicePlan<'_>,
    opts: &Options,
) -> Moved {
    let strategy = plan
        .strategy
        .clone()
        .unwrap_or_else(|| plan.new.service.strategy.clone());
    let old = plan.old.filter(|o| *o != plan.new.version);
    match strategy {
        Strategy::Recreate => recreate(target, steps, plan, old, opts).await,
        Strategy::BlueGreen { keep_warm_ms } => {
            match start_ready(target, steps, plan, opts).await {
                Err(m) => m,
                Ok(()) => {
                    if !switch_all(target, steps, plan).await {
                        // Traffic never moved: the old version keeps it, the new one goes.
                        stop(target, steps, plan, &plan.new.version).await;
                        return Moved::Failed {
                            reason: format!(
                                "{}: switching traffic to {} failed (see the switch step)",
                                plan.new.service.name, plan.new.version
                            ),
                            rolled_back: false,
                        };
                    }
                    match old {
                        Some(old) => retire(target, steps, plan, old, keep_warm_ms).await,
                        None => Moved::Live { keep_warm_ms: 0 },
                    }
                }
            }
        }
        Strategy::Canary(c) => canary(target, steps, plan, old, &c, opts).await,
        Strategy::Rolling {
            max_surge,
            max_unavailable,
        } => match old {
            Some(old) if target.replica_batches() => {
                let limits = Limits {
                    surge: max_surge,
                    unavailable: max_unavailable,
                };
                rolling_batches(target, steps, plan, old, limits, opts).await
            }
            _ => rolling(target, steps, plan, old, opts).await,
        },
    }
}

async fn start_ready(
    target: &dyn Target,
    steps: &dyn Steps,
    plan: &ServicePlan<'_>,
    opts: &Options,
) -> Result<(), Moved> {
    let svc = plan.new.service.name.as_str();
    let key = plan.new.key();
    let env = key.as_str();
    let version = plan.new.version.as_str();
    let t = now();
    if let Err(e) = target.start(plan.new).await {
        steps
            .record(svc, "start", false, json!({"error": e.to_string()}), t)
            .await;
        let _ = target.stop(env, svc, version).await;
        return Err(Moved::Failed {
            reason: format!("{svc}: the new version {version} did not start: {e}"),
            rolled_back: false,
        });
    }
    steps
        .record(
            svc,
            "start",
            true,
            json!({"version": version, "replicas": plan.new.service.replicas}),
            t,
        )
        .await;
    let t = now();
    if let Err(e) = target
        .wait_ready(env, svc, version, opts.ready_timeout)
        .await
    {
        steps
            .record(svc, "ready", false, json!({"error": e.to_string()}), t)
            .await;
        let _ = target.stop(env, svc, version).await;
        return Err(Moved::Failed {
            reason: format!("{svc}: the new version {version} did not become ready: {e}"),
            rolled_back: false,
        });
    }
    steps
        .record(svc, "ready", true, json!({"version": version}), t)
        .await;
    Ok(())
}

async fn route(target: &dyn Target, plan: &ServicePlan<'_>, split: &Split) -> Result<u64, String> {
    let started = std::time::Instant::now();
    target
        .route(&plan.new.key(), &plan.new.service, plan.route, split)
        .await
        .map_err(|e| e.to_string())?;
    Ok(started.elapsed().as_micros() as u64)
}

async fn switch_all(target: &dyn Target, steps: &dyn Steps, plan: &ServicePlan<'_>) -> bool {
    let t = now();
    let r = route(target, plan, &Split::all(&plan.new.version)).await;
    let ok = r.is_ok();
    steps
        .record(
            &plan.new.service.name,
            "switch",
            ok,
            match r {
                Ok(us) => json!({"to": plan.new.version, "switch_us": us}),
                Err(e) => json!({"to": plan.new.version, "error": e}),
            },
            t,
        )
        .await;
    ok
}

async fn drain(target: &dyn Target, steps: &dyn Steps, plan: &ServicePlan<'_>, version: &str) {
    let svc = plan.new.service.name.as_str();
    let t = now();
    let r = target
        .drain(&plan.new.key(), svc, version, &plan.new.service.drain)
        .await;
    let ok = r.is_ok();
    steps
        .record(
            svc,
            "drain",
            ok,
            match r {
                Ok(rep) => json!({"version": version, "cut_requests": rep.cut_requests,
                                  "closed_upgrades": rep.closed_upgrades}),
                Err(e) => json!({"version": version, "error": e.to_string()}),
            },
            t,
        )
        .await;
}

async fn stop(target: &dyn Target, steps: &dyn Steps, plan: &ServicePlan<'_>, version: &str) {
    let svc = plan.new.service.name.as_str();
    let t = now();
    let r = target.stop(&plan.new.key(), svc, version).await;
    steps
        .record(
            svc,
            "stop",
            r.is_ok(),
            match r {
                Ok(()) => json!({"version": version}),
                Err(e) => json!({"version": version, "error": e.to_string()}),
            },
            t,
        )
        .await;
}

async fn recreate(
    target: &dyn Target,
    steps: &dyn Steps,
    plan: &ServicePlan<'_>,
    old: Option<&str>,
    opts: &Options,
) -> Moved {
    if let Some(old) = old {
        stop(target, steps, plan, old).await;
    }
    if let Err(m) = start_ready(target, steps, plan, opts).await {
        return m;
    }
    switch_all(target, steps, plan).await;
    Moved::Live { keep_warm_ms: 0 }
}

async fn rolling(
    target: &dyn Target,
    steps: &dyn Steps,
    plan: &ServicePlan<'_>,
    old: Option<&str>,
    opts: &Options,
) -> Moved {
    if let Err(m) = start_ready(target, steps, plan, opts).await {
        return m;
    }
    let Some(old) = old else {
        switch_all(target, steps, plan).await;
        return Moved::Live { keep_warm_ms: 0 };
    };
    let n = plan.new.service.replicas.max(1);
    for k in 1..n {
        let weight = (k * 100 / n) as u8;
        let t = now();
        let split = Split {
            stable: old.to_string(),
            canary: Some((plan.new.version.clone(), weight)),
        };
        let r = route(target, plan, &split).await;
        steps
            .record(
                &plan.new.service.name,
                "shift",
                r.is_ok(),
                json!({"weight": weight, "replicas_new": k, "replicas": n}),
                t,
            )
            .await;
    }
    switch_all(target, steps, plan).await;
    drain(target, steps, plan, old).await;
    stop(target, steps, plan, old).await;
    Moved::Live { keep_warm_ms: 0 }
}

/// The verdict on a canary step's replicas of `version`: each must have stayed up through the
/// step: not restarted (its restart count did not grow), not `restarting` or `failed` at the
/// end. Replicas that appeared during the step count from zero restarts. (A replica that is
/// only unready gets no traffic, and a slow probe on a busy machine is no reason to roll back.)
pub fn judge_replicas(
    version: &str,
    before: &[ReplicaStatus],
    after: &[ReplicaStatus],
) -> Result<(), String> {
    for r in after.iter().filter(|r| r.version == version) {
        let earlier = before
            .iter()
            .find(|b| b.replica == r.replica)
            .map_or(0, |b| b.restarts);
        if r.restarts > earlier {
            return Err(format!(
                "replica {} restarted {} time(s) during the step ({} restarts in all)",
                r.replica,
                r.restarts - earlier,
                r.restarts
            ));
        }
        if matches!(r.health.as_str(), "restarting" | "failed") {
            return Err(format!(
                "replica {} is {} at the end of the step",
                r.replica, r.health
            ));
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
struct Limits {
    surge: u32,
    unavailable: u32,
}

/// Where a batched rolling update stands: replicas `0..new` of the new version and `0..old` of
/// the old one run (and are routed once ready).
struct Rollout<'p, 'a> {
    target: &'p dyn Target,
    steps: &'p dyn Steps,
    plan: &'p ServicePlan<'a>,
    old_version: &'p str,
    /// The old version's replicas before the update (what a rollback restores).
    old_full: u32,
    old: u32,
    new: u32,
    batch: u32,
}

impl Rollout<'_, '_> {
    fn key(&self) -> String {
        self.plan.new.key()
    }

    fn svc(&self) -> &str {
        &self.plan.new.service.name
    }

    async fn route(&self, old: u32, new: u32) -> Result<(), String> {
        let members = [
            Members {
                version: self.old_version.to_string(),
                replicas: old,
            },
            Members {
                version: self.plan.new.version.clone(),
                replicas: new,
            },
        ];
        self.target
            .route_members(
                &self.key(),
                &self.plan.new.service,
                self.plan.route,
                &members,
            )
            .await
            .map_err(|e| e.to_string())
    }

    /// Starts `add` more new replicas and waits until all new ones are ready.
    async fn grow(&mut self, add: u32, opts: &Options) -> Result<(), String> {
        let mut spec = self.plan.new.clone();
        spec.service.replicas = self.new + add;
        let key = self.key();
        self.target
            .start(&spec)
            .await
            .map_err(|e| format!("did not start: {e}"))?;
        self.new += add;
        self.target
            .wait_ready(&key, self.svc(), &spec.version, opts.ready_timeout)
            .await
            .map_err(|e| format!("did not become ready: {e}"))
    }

    /// Takes the old replicas `old - remove..old` out of the route, drains and stops them.
    async fn shrink(&mut self, remove: u32) -> Result<u64, String> {
        let keep = self.old - remove;
        self.route(keep, self.new).await?;
        let key = self.key();
        let cut = match self
            .target
            .drain_replicas(
                &key,
                self.svc(),
                self.old_version,
                keep,
                &self.plan.new.service.drain,
            )
            .await
        {
            Ok(r) => r.cut_requests,
            Err(e) => return Err(format!("draining old replicas failed: {e}")),
        };
        self.target
            .scale(&key, self.svc(), self.old_version, keep)
            .await
            .map_err(|e| format!("stopping old replicas failed: {e}"))?;
        self.old = keep;
        Ok(cut)
    }

    /// The old version back at its full count with all traffic; the new one stopped.
    async fn roll_back(&mut self, why: String, opts: &Options) -> Moved {
        let svc = self.svc().to_string();
        let key = self.key();
        let new_version = self.plan.new.version.clone();
        let t = now();
        let mut problems = Vec::new();
        if self.old < self.old_full {
            if let Err(e) = self
                .target
                .scale(&key, &svc, self.old_version, self.old_full)
                .await
            {
                problems.push(format!("restarting old replicas failed: {e}"));
            } else if let Err(e) = self
                .target
                .wait_ready(&key, &svc, self.old_version, opts.ready_timeout)
                .await
            {
                problems.push(format!("old replicas did not become ready: {e}"));
            }
        }
        if let Err(e) = self
            .target
            .route(
                &key,
                &self.plan.new.service,
                self.plan.route,
                &Split::all(self.old_version),
            )
            .await
        {
            problems.push(format!("routing back failed: {e}"));
        }
        // Out of the route now: drain what the new replicas still serve, then stop them.
        let _ = self
            .target
            .drain(&key, &svc, &new_version, &self.plan.new.service.drain)
            .await;
        if let Err(e) = self.target.stop(&key, &svc, &new_version).await {
            problems.push(format!("stopping the new version failed: {e}"));
        }
        let touched = self.batch > 1 || self.old < self.old_full || self.new > 0;
        self.steps
            .record(
                &svc,
                "rollback",
                problems.is_empty(),
                json!({"to": self.old_version, "reason": why, "replicas": self.old_full,
                       "problems": problems}),
                t,
            )
            .await;
        Moved::Failed {
            reason: format!(
                "{svc}: the new version {new_version} {why}; the rolling update went back to {} with {} replicas",
                self.old_version, self.old_full
            ),
            rolled_back: touched,
        }
    }
}

/// A rolling update in batches (see the module's documentation).
async fn rolling_batches(
    target: &dyn Target,
    steps: &dyn Steps,
    plan: &ServicePlan<'_>,
    old: &str,
    limits: Limits,
    opts: &Options,
) -> Moved {
    let svc = plan.new.service.name.as_str();
    let key = plan.new.key();
    let n = plan.new.service.replicas.max(1);
    // Replicas of the old version that run now; indices are 0..count on targets with batches.
    let old_full = target
        .status(&key, svc)
        .iter()
        .filter(|r| r.version == old && r.health != "stopped")
        .count() as u32;
    let mut r = Rollout {
        target,
        steps,
        plan,
        old_version: old,
        old_full,
        old: old_full,
        new: 0,
        batch: 0,
    };
    // Ready and routed replicas never drop below this; running ones never exceed `ceiling`.
    let floor = n.saturating_sub(limits.unavailable);
    let ceiling = n.saturating_add(limits.surge);
    while r.new < n || r.old > 0 {
        r.batch += 1;
        let t = now();
        let add = ceiling.saturating_sub(r.old + r.new).min(n - r.new);
        if add > 0 {
            if let Err(why) = r.grow(add, opts).await {
                steps
                    .record(
                        svc,
                        "ready",
                        false,
                        json!({"batch": r.batch, "version": plan.new.version, "error": why}),
                        t,
                    )
                    .await;
                return r.roll_back(why, opts).await;
            }
            if let Err(e) = r.route(r.old, r.new).await {
                return r.roll_back(format!("could not be routed: {e}"), opts).await;
            }
        }
        let remove = r.old.min((r.old + r.new).saturating_sub(floor));
        if add == 0 && remove == 0 {
            // Only reachable with limits the parser refuses (both 0); never loop forever.
            return r
                .roll_back(
                    "could not move: max-surge and max-unavailable allow no step".into(),
                    opts,
                )
                .await;
        }
        let mut cut = 0;
        if remove > 0 {
            match r.shrink(remove).await {
                Ok(c) => cut = c,
                Err(e) => return r.roll_back(e, opts).await,
            }
        }
        steps
            .record(
                svc,
                "batch",
                true,
                json!({"batch": r.batch, "started": add, "stopped": remove,
                       "new_replicas": r.new, "old_replicas": r.old,
                       "running": r.new + r.old, "routed": r.new + r.old,
                       "replicas": n, "max_surge": limits.surge,
                       "max_unavailable": limits.unavailable, "cut_requests": cut}),
                t,
            )
            .await;
    }
    // One plain route to the new version, as the other strategies end.
    switch_all(target, steps, plan).await;
    stop(target, steps, plan, old).await;
    Moved::Live { keep_warm_ms: 0 }
}

/// The verdict on a canary step: `Err` names the failed check with its numbers.
pub fn judge(c: &Canary, new: &Window, old: Option<&Window>) -> Result<(), String> {
    let a = &c.analysis;
    if new.requests < a.min_requests {
        return Ok(());
    }
    if new.error_rate > a.max_error_rate {
        return Err(format!(
            "error rate {:.2}% ({} of {} requests) is above the limit {:.2}%",
            new.error_rate * 100.0,
            new.errors,
            new.requests,
            a.max_error_rate * 100.0
        ));
    }
    if let Some(p99) = new.p99_ms
        && p99 > a.max_p99_ms as f64
    {
        return Err(format!(
            "p99 latency {p99} ms is above the limit {} ms",
            a.max_p99_ms
        ));
    }
    if let Some(old) = old
        && old.requests >= a.min_requests
        && new.error_rate - old.error_rate > a.max_error_rate_increase
    {
        return Err(format!(
            "error rate {:.2}% exceeds the old version's {:.2}% by more than {:.2} points",
            new.error_rate * 100.0,
            old.error_rate * 100.0,
            a.max_error_rate_increase * 100.0
        ));
    }
    Ok(())
}

async fn canary(
    target: &dyn Target,
    steps: &dyn Steps,
    plan: &ServicePlan<'_>,
    old: Option<&str>,
    c: &Canary,
    opts: &Options,
) -> Moved {
    if let Err(m) = start_ready(target, steps, plan, opts).await {
        return m;
    }
    let Some(old) = old else {
        switch_all(target, steps, plan).await;
        return Moved::Live { keep_warm_ms: 0 };
    };
    let svc = plan.new.service.name.as_str();
    let key = plan.new.key();
    let env = key.as_str();
    let new_v = plan.new.version.as_str();
    for step in &c.steps {
        let t = now();
        let split = if step.weight >= 100 {
            Split::all(new_v)
        } else {
            Split {
                stable: old.to_string(),
                canary: Some((new_v.to_string(), step.weight)),
            }
        };
        let switched = route(target, plan, &split).await;
        let before_new = target.stats(env, svc, new_v);
        let before_old = target.stats(env, svc, old);
        let replicas_before = target.observe(env, svc).await;
        tokio::time::sleep(Duration::from_millis(step.pause_ms)).await;
        let w_new = target.stats(env, svc, new_v).since(&before_new);
        let w_old = target.stats(env, svc, old).since(&before_old);
        let replicas_after = target.observe(env, svc).await;
        let verdict = match &switched {
            Err(e) => Err(format!("routing failed: {e}")),
            // At 100% the old version gets no traffic: judge only the thresholds.
            Ok(_) => judge(c, &w_new, (step.weight < 100).then_some(&w_old))
                .and_then(|()| judge_replicas(new_v, &replicas_before, &replicas_after)),
        };
        steps
            .record(
                svc,
                "canary",
                verdict.is_ok(),
                json!({"weight": step.weight, "pause_ms": step.pause_ms,
                       "new": window_json(&w_new), "old": window_json(&w_old),
                       "failed_check": verdict.as_ref().err()}),
                t,
            )
            .await;
        if let Err(why) = verdict {
            let t = now();
            let r = route(target, plan, &Split::all(old)).await;
            steps
                .record(
                    svc,
                    "rollback",
                    r.is_ok(),
                    json!({"to": old, "reason": why}),
                    t,
                )
                .await;
            drain(target, steps, plan, new_v).await;
            stop(target, steps, plan, new_v).await;
            return Moved::Failed {
                reason: format!(
                    "{svc}: canary step {}% failed: {why}; traffic went back to {old}",
                    step.weight
                ),
                rolled_back: true,
            };
        }
    }
    if c.steps.last().is_none_or(|s| s.weight < 100) {
        switch_all(target, steps, plan).await;
    }
    retire(target, steps, plan, old, c.keep_warm_ms).await
}

/// The version that just lost all traffic: drained, then stopped at once when it is not to
/// be kept warm (`keep_warm_ms` 0); otherwise the engine stops it after `keep_warm_ms`.
async fn retire(
    target: &dyn Target,
    steps: &dyn Steps,
    plan: &ServicePlan<'_>,
    old: &str,
    keep_warm_ms: u64,
) -> Moved {
    drain(target, steps, plan, old).await;
    if keep_warm_ms == 0 {
        stop(target, steps, plan, old).await;
    }
    Moved::Live { keep_warm_ms }
}

#[cfg(test)]
mod replica_tests {
    use super::judge_replicas;
    use crate::target::ReplicaStatus;

    fn r(replica: &str, health: &str, restarts: u32) -> ReplicaStatus {
        ReplicaStatus {
            replica: replica.into(),
            version: replica.split('/').nth(1).unwrap_or_default().into(),
            health: health.into(),
            restarts,
            in_flight: 0,
            address: String::new(),
            pid: None,
        }
    }

    #[test]
    fn a_canary_replica_that_restarted_or_failed_fails_the_step() {
        let before = [r("web/2/0", "ready", 1), r("web/1/0", "ready", 0)];
        // Steady (restarts from before the step do not count), and the old version's
        // troubles are not the canary's.
        let steady = [r("web/2/0", "ready", 1), r("web/1/0", "restarting", 3)];
        assert_eq!(judge_replicas("2", &before, &steady), Ok(()));
        let restarted = [r("web/2/0", "ready", 2)];
        assert_eq!(
            judge_replicas("2", &before, &restarted),
            Err("replica web/2/0 restarted 1 time(s) during the step (2 restarts in all)".into())
        );
        // A replica that appeared during the step counts from zero.
        let new_one = [r("web/2/0", "ready", 1), r("web/2/1", "ready", 1)];
        assert!(judge_replicas("2", &before, &new_one).is_err());
        for bad in ["failed", "restarting"] {
            let after = [r("web/2/0", bad, 1)];
            assert_eq!(
                judge_replicas("2", &before, &after),
                Err(format!("replica web/2/0 is {bad} at the end of the step"))
            );
        }
        // Unready only: no traffic goes to it, no verdict on it.
        assert_eq!(
            judge_replicas("2", &before, &[r("web/2/0", "unready", 1)]),
            Ok(())
        );
    }
}
