//! The target's calls against the fake API server: which requests a blue-green deploy and a
//! canary make, in which order, and what the cluster's objects look like afterwards.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ouro_deploy::spec::{Drain, Route};
use ouro_deploy::target::{Split, Target, TargetError, VersionSpec};
use ouro_deploy_kube::KubeTarget;

use crate::fake_api::FakeApi;
use crate::fixtures::{api, environment_env, settings, web};

const READY: Duration = Duration::from_secs(10);

fn spec(service: ouro_deploy::spec::Service, environment: &str, version: &str) -> VersionSpec {
    VersionSpec {
        project: "shop".into(),
        environment: environment.into(),
        service,
        version: version.into(),
        bundle: PathBuf::from("unused-on-kubernetes.tar.zst"),
        env: environment_env(),
    }
}

async fn setup() -> (FakeApi, KubeTarget) {
    let fake = FakeApi::start().await;
    let target = KubeTarget::new(fake.client(), settings(), "shop").expect("target");
    // The strategies hold targets as trait objects.
    let _: &dyn Target = &target;
    (fake, target)
}

/// The mutating calls and the reads of one Deployment, in order, without status refreshes
/// (pod lists) so the sequence reads as the controller's decisions.
fn sequence(fake: &FakeApi) -> Vec<String> {
    fake.calls()
        .iter()
        .map(|c| c.short())
        .filter(|c| c != "GET pods")
        .collect()
}

/// Starts a version, waits for it and routes all traffic to it.
async fn go_live(target: &KubeTarget, s: &VersionSpec) {
    target.start(s).await.expect("start");
    target
        .wait_ready(&s.environment, &s.service.name, &s.version, READY)
        .await
        .expect("ready");
    target
        .route(
            &s.environment,
            &s.service,
            &Route::default(),
            &Split::all(&s.version),
        )
        .await
        .expect("route");
}

#[tokio::test]
async fn blue_green_applies_waits_switches_the_selector_and_deletes_the_old_version() {
    let (fake, target) = setup().await;
    let blue = spec(web(), "production", "1.2.0");
    let green = spec(web(), "production", "1.3.0-rc.1");
    go_live(&target, &blue).await;
    let ns = "ouro-shop-production";
    assert_eq!(fake.ready_pods_behind(ns, "web").get("1-2-0"), Some(&2));
    fake.clear_calls();

    target.start(&green).await.expect("start green");
    target
        .wait_ready("production", "web", "1.3.0-rc.1", READY)
        .await
        .expect("green ready");
    target
        .route(
            "production",
            &green.service,
            &Route::default(),
            &Split::all("1.3.0-rc.1"),
        )
        .await
        .expect("switch");
    assert_eq!(
        fake.ready_pods_behind(ns, "web")
            .into_iter()
            .collect::<Vec<_>>(),
        [("1-3-0-rc-1".to_string(), 2)],
        "after the switch only green's pods get traffic"
    );
    let drained = target
        .drain("production", "web", "1.2.0", &Drain::default())
        .await
        .expect("drain");
    assert_eq!(drained.cut_requests, 0);
    target
        .stop("production", "web", "1.2.0")
        .await
        .expect("stop blue");

    assert_eq!(
        sequence(&fake),
        [
            // start: is the name free (or this version's)? then the env Secret and Deployment
            "GET deployments/web-1-3-0-rc-1",
            "PATCH secrets/web-1-3-0-rc-1-env",
            "PATCH deployments/web-1-3-0-rc-1",
            // wait_ready: the first status read shows 0 ready, the next all
            "GET deployments/web-1-3-0-rc-1",
            "GET deployments/web-1-3-0-rc-1",
            // route: green already has its replicas; the selector moves to green
            "GET deployments/web-1-3-0-rc-1",
            "PATCH services/web",
            // stop blue
            "DELETE deployments/web-1-2-0",
            "DELETE secrets/web-1-2-0-env",
        ]
    );
    let calls = fake.calls();
    let applies: Vec<_> = calls.iter().filter(|c| c.method == "PATCH").collect();
    for c in &applies {
        assert_eq!(c.content_type, "application/apply-patch+yaml", "{}", c.path);
        assert!(
            c.query.contains("fieldManager=ouro") && c.query.contains("force=true"),
            "{}",
            c.query
        );
    }
    let service_patch = applies
        .iter()
        .find(|c| c.path.ends_with("/services/web"))
        .expect("service patch");
    let selector = &service_patch.body.as_ref().expect("body")["spec"]["selector"];
    assert_eq!(selector["ouro.dev/version"], "1-3-0-rc-1");
    assert_eq!(selector["app.kubernetes.io/name"], "web");
    let secret = applies
        .iter()
        .find(|c| c.path.ends_with("/secrets/web-1-3-0-rc-1-env"))
        .expect("secret");
    // base64 of "s3cret"
    assert_eq!(
        secret.body.as_ref().expect("body")["data"]["API_KEY"],
        "czNjcmV0"
    );

    assert!(
        fake.object(&format!(
            "/apis/apps/v1/namespaces/{ns}/deployments/web-1-2-0"
        ))
        .is_none()
    );
    assert!(
        fake.object(&format!("/api/v1/namespaces/{ns}/secrets/web-1-2-0-env"))
            .is_none()
    );
    let status = target.status("production", "web");
    assert_eq!(status.len(), 2, "{status:?}");
    for r in &status {
        assert_eq!(r.version, "1.3.0-rc.1");
        assert_eq!(r.health, "ready");
        assert!(
            r.replica.starts_with("web/1.3.0-rc.1/web-1-3-0-rc-1-"),
            "{}",
            r.replica
        );
    }

    // Idempotent: stopping again and starting the live version again change nothing.
    target
        .stop("production", "web", "1.2.0")
        .await
        .expect("stop twice");
    target.start(&green).await.expect("start twice");
    let d = fake
        .object(&format!(
            "/apis/apps/v1/namespaces/{ns}/deployments/web-1-3-0-rc-1"
        ))
        .expect("green");
    assert_eq!(d["metadata"]["generation"], 1);
}

#[tokio::test]
async fn canary_steps_scale_both_versions_to_the_weight_and_finish_on_the_new_one() {
    let (fake, target) = setup().await;
    let stable = spec(api(), "staging", "1.9.4");
    let canary = spec(api(), "staging", "2.0.0");
    go_live(&target, &stable).await;
    target.start(&canary).await.expect("start canary");
    target
        .wait_ready("staging", "api", "2.0.0", READY)
        .await
        .expect("canary ready");
    let ns = "ouro-shop-staging";
    // Before the first step the Service still selects only the stable version.
    assert_eq!(fake.ready_pods_behind(ns, "api").len(), 1);

    let mut steps = Vec::new();
    for weight in [25u8, 50] {
        fake.clear_calls();
        let split = Split {
            stable: "1.9.4".into(),
            canary: Some(("2.0.0".into(), weight)),
        };
        target
            .route("staging", &canary.service, &Route::default(), &split)
            .await
            .expect("canary step");
        let behind = fake.ready_pods_behind(ns, "api");
        let (s, c) = (behind["1-9-4"], behind["2-0-0"]);
        let share = c as f64 / (s + c) as f64 * 100.0;
        assert!(
            (share - f64::from(weight)).abs() < 1e-9,
            "{weight}%: {behind:?}"
        );
        steps.push(sequence(&fake));
    }
    // 25 % of 4 pods: the canary shrinks to 1 before the Service spans both versions, the
    // stable version to 3.
    assert_eq!(
        steps[0],
        [
            "GET deployments",
            "GET deployments/api-1-9-4",
            "GET deployments/api-2-0-0",
            "PATCH deployments/api-2-0-0/scale",
            "GET deployments/api-1-9-4",
            "PATCH deployments/api-1-9-4/scale",
            "PATCH services/api",
        ]
    );
    // 50 %: the canary grows first and is waited for, then the stable version shrinks.
    assert_eq!(
        steps[1],
        [
            "GET deployments",
            "GET deployments/api-1-9-4",
            "GET deployments/api-2-0-0",
            "PATCH deployments/api-2-0-0/scale",
            "GET deployments/api-2-0-0",
            "GET deployments/api-2-0-0",
            "GET deployments/api-1-9-4",
            "PATCH deployments/api-1-9-4/scale",
            "PATCH services/api",
        ]
    );
    let scale = fake
        .calls()
        .into_iter()
        .find(|c| c.path.ends_with("api-2-0-0/scale"))
        .expect("scale call");
    assert_eq!(scale.body.expect("body")["spec"]["replicas"], 2);
    assert_eq!(scale.content_type, "application/merge-patch+json");

    // The last step: all traffic to the new version at its full replica count.
    fake.clear_calls();
    target
        .route(
            "staging",
            &canary.service,
            &Route::default(),
            &Split::all("2.0.0"),
        )
        .await
        .expect("promote");
    assert_eq!(
        sequence(&fake),
        [
            "GET deployments/api-2-0-0",
            "PATCH deployments/api-2-0-0/scale",
            "GET deployments/api-2-0-0",
            "GET deployments/api-2-0-0",
            "PATCH services/api",
        ]
    );
    assert_eq!(
        fake.ready_pods_behind(ns, "api")
            .into_iter()
            .collect::<Vec<_>>(),
        [("2-0-0".to_string(), 4)]
    );
    // The old version stays warm (2 pods, out of traffic) until the strategy stops it.
    let old = fake
        .object(&format!(
            "/apis/apps/v1/namespaces/{ns}/deployments/api-1-9-4"
        ))
        .expect("old version");
    assert_eq!(old["spec"]["replicas"], 2);
}

#[tokio::test]
async fn a_canary_refuses_while_a_third_version_has_pods() {
    let (_fake, target) = setup().await;
    let warm = spec(api(), "staging", "1.9.3");
    let stable = spec(api(), "staging", "1.9.4");
    let canary = spec(api(), "staging", "2.0.0");
    target.start(&warm).await.expect("warm");
    go_live(&target, &stable).await;
    target.start(&canary).await.expect("canary");
    let split = Split {
        stable: "1.9.4".into(),
        canary: Some(("2.0.0".into(), 10)),
    };
    let err = target
        .route("staging", &canary.service, &Route::default(), &split)
        .await
        .expect_err("a third version would get traffic");
    assert!(err.to_string().contains("1.9.3"), "{err}");
}

#[tokio::test]
async fn wait_ready_times_out_with_the_pods_reason() {
    let (fake, target) = setup().await;
    fake.stuck("web-1-4-0");
    target
        .start(&spec(web(), "production", "1.4.0"))
        .await
        .expect("start");
    let started = Instant::now();
    let err = target
        .wait_ready("production", "web", "1.4.0", Duration::from_millis(300))
        .await
        .expect_err("never ready");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the timeout is kept"
    );
    let TargetError::NotReady(message) = err else {
        panic!("NotReady expected: {err}");
    };
    assert!(message.contains("0/2 ready"), "{message}");
    assert!(message.contains("CrashLoopBackOff"), "{message}");
    assert!(message.contains("Progressing=True"), "{message}");
}

#[tokio::test]
async fn wait_ready_stops_at_a_progress_deadline() {
    let (fake, target) = setup().await;
    fake.failing("web-1-5-0");
    target
        .start(&spec(web(), "production", "1.5.0"))
        .await
        .expect("start");
    // A long timeout: failure must come from the condition, not the clock.
    let started = Instant::now();
    let err = target
        .wait_ready("production", "web", "1.5.0", Duration::from_secs(600))
        .await
        .expect_err("deadline exceeded");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        err.to_string().contains("progress deadline exceeded"),
        "{err}"
    );
}

#[tokio::test]
async fn wait_ready_rides_out_an_unavailable_api_server() {
    let (fake, target) = setup().await;
    target
        .start(&spec(web(), "production", "1.6.0"))
        .await
        .expect("start");
    fake.unavailable_for(3);
    target
        .wait_ready("production", "web", "1.6.0", READY)
        .await
        .expect("ready once the API server answers again");
    let failed_reads = fake
        .calls()
        .iter()
        .filter(|c| c.short() == "GET deployments/web-1-6-0")
        .count();
    assert!(
        failed_reads >= 5,
        "3 failed reads, then not ready, then ready: {failed_reads}"
    );
}

#[tokio::test]
async fn versions_with_the_same_slug_do_not_replace_each_other() {
    let (_fake, target) = setup().await;
    target
        .start(&spec(web(), "production", "1.2.0-rc.1"))
        .await
        .expect("first");
    let err = target
        .start(&spec(web(), "production", "1.2.0-rc-1"))
        .await
        .expect_err("same Deployment name");
    assert!(err.to_string().contains("1.2.0-rc.1"), "{err}");
}

#[tokio::test]
async fn another_project_is_refused_and_stats_are_zero() {
    let (_fake, target) = setup().await;
    let mut other = spec(web(), "production", "1.0.0");
    other.project = "billing".into();
    assert!(target.start(&other).await.is_err());
    let stats = target.stats("production", "web", "1.0.0");
    assert_eq!(stats.requests, 0);
    assert_eq!(
        stats.latency_buckets.len(),
        ouro_deploy::target::LATENCY_BUCKETS_MS.len() + 1
    );
}

/// The engine names environments `PROJECT/ENVIRONMENT`: the server-wide target keeps each
/// project in its own namespaces.
#[tokio::test]
async fn the_server_wide_target_keeps_projects_apart() {
    let fake = FakeApi::start().await;
    let targets = ouro_deploy_kube::KubeTargets::new(fake.client(), settings()).expect("targets");
    let t: &dyn Target = &targets;
    for project in ["shop", "blog"] {
        let s = VersionSpec {
            project: project.into(),
            ..spec(web(), "production", "1.0.0")
        };
        let key = s.key();
        assert_eq!(key, format!("{project}/production"));
        t.start(&s).await.expect("start");
        t.wait_ready(&key, "web", "1.0.0", READY)
            .await
            .expect("ready");
        t.route(&key, &s.service, &Route::default(), &Split::all("1.0.0"))
            .await
            .expect("route");
        let ns = format!("ouro-{project}-production");
        assert_eq!(
            fake.ready_pods_behind(&ns, "web").get("1-0-0"),
            Some(&2),
            "{ns}"
        );
    }
    t.stop("blog/production", "web", "1.0.0")
        .await
        .expect("stop");
    assert!(
        fake.object("/apis/apps/v1/namespaces/ouro-blog-production/deployments/web-1-0-0")
            .is_none()
    );
    assert!(
        fake.object("/apis/apps/v1/namespaces/ouro-shop-production/deployments/web-1-0-0")
            .is_some()
    );
}

/// Collects the steps a strategy records.
#[derive(Default)]
struct Recorded(std::sync::Mutex<Vec<(String, bool, serde_json::Value)>>);

impl ouro_deploy::strategy::Steps for Recorded {
    fn record<'a>(
        &'a self,
        _service: &'a str,
        name: &'a str,
        ok: bool,
        detail: serde_json::Value,
        _started_at: i64,
    ) -> futures::future::BoxFuture<'a, ()> {
        self.0
            .lock()
            .expect("steps")
            .push((name.to_string(), ok, detail));
        Box::pin(async {})
    }
}

/// Traffic does not pass through Ouro on Kubernetes, so a canary step is judged on the new
/// version's pods: pods that restart during the step fail it, traffic goes back to the stable
/// version and the new Deployment is removed; a steady canary goes through every step.
#[tokio::test]
async fn a_canary_whose_pods_restart_during_a_step_rolls_back() {
    use ouro_deploy::spec::{CanaryStep, Strategy};
    use ouro_deploy::strategy::{self, Moved, Options, ServicePlan};

    let short_steps = |mut s: ouro_deploy::spec::Service| {
        if let Strategy::Canary(c) = &mut s.strategy {
            c.steps = vec![
                CanaryStep {
                    weight: 25,
                    pause_ms: 200,
                },
                CanaryStep {
                    weight: 100,
                    pause_ms: 0,
                },
            ];
        }
        s
    };
    for flapping in [false, true] {
        // The engine's view: every project on one cluster, environments named `PROJECT/ENV`.
        let fake = FakeApi::start().await;
        let targets =
            ouro_deploy_kube::KubeTargets::new(fake.client(), settings()).expect("targets");
        let target = targets.project("shop").expect("the project's target");
        let stable = spec(short_steps(api()), "staging", "1.9.4");
        let canary = spec(short_steps(api()), "staging", "2.0.0");
        go_live(&target, &stable).await;
        if flapping {
            fake.flapping("api-2-0-0");
        }
        let recorded = Recorded::default();
        let route = Route::default();
        let plan = ServicePlan {
            new: &canary,
            old: Some("1.9.4"),
            route: &route,
            strategy: None,
        };
        let moved = strategy::run(&targets, &recorded, &plan, &Options::default()).await;
        let steps = recorded.0.lock().expect("steps").clone();
        let first = steps
            .iter()
            .find(|(n, _, _)| n == "canary")
            .unwrap_or_else(|| panic!("no canary step: {steps:?} {moved:?}"));
        let behind = fake.ready_pods_behind("ouro-shop-staging", "api");
        if flapping {
            let Moved::Failed {
                reason,
                rolled_back,
            } = moved
            else {
                panic!("a restarting canary went live: {steps:?}")
            };
            assert!(rolled_back);
            assert!(
                reason.contains("canary step 25% failed: replica api/2.0.0/")
                    && reason.contains("restarted"),
                "{reason}"
            );
            assert!(!first.1, "{steps:?}");
            assert!(
                first.2["failed_check"]
                    .as_str()
                    .is_some_and(|m| m.contains("restarted")),
                "{steps:?}"
            );
            assert_eq!(behind.keys().collect::<Vec<_>>(), ["1-9-4"], "{behind:?}");
            assert!(
                fake.object("/apis/apps/v1/namespaces/ouro-shop-staging/deployments/api-2-0-0")
                    .is_none(),
                "the canary's Deployment is removed"
            );
        } else {
            assert!(matches!(moved, Moved::Live { .. }), "{steps:?}");
            assert!(first.1, "{steps:?}");
            assert_eq!(behind.keys().collect::<Vec<_>>(), ["2-0-0"], "{behind:?}");
        }
    }
}
