//! Deployment records on both databases: one running deployment per environment, steps with
//! their events, and the environment's live and previous release after each outcome.

use ouro_core::{Actor, ErrorCode};
use ouro_deploy::deployments::{self, NewDeployment, NewStep, Outcome};
use ouro_store::testing::backends;
use ouro_store::{Store, q};
use serde_json::json;

async fn open(url: &str) -> (Store, i64) {
    let migrations = [
        ouro_store::PLATFORM_MIGRATIONS,
        ouro_plan::MIGRATIONS,
        ouro_code::MIGRATIONS,
        ouro_build::MIGRATIONS,
        ouro_test::MIGRATIONS,
        ouro_release::MIGRATIONS,
        ouro_deploy::MIGRATIONS,
    ]
    .concat();
    let store = Store::open(url, &migrations).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let project = q(
        "INSERT INTO projects (slug, name, description, visibility, created_at, updated_at) \
         VALUES ('demo', 'Demo', '', 'private', 1, 1) RETURNING id",
    )
    .fetch_one(&mut tx)
    .await
    .unwrap()
    .i64("id")
    .unwrap();
    tx.commit().await.unwrap();
    (store, project)
}

fn alice() -> Actor {
    Actor::User {
        id: 1,
        name: "alice".into(),
    }
}

async fn start(
    store: &Store,
    project: i64,
    release: i64,
    version: &str,
    from: Option<&str>,
    kind: &str,
) -> Result<i64, ouro_core::OuroError> {
    deployments::start(
        store,
        NewDeployment {
            project_id: project,
            project_slug: "demo",
            environment: "staging",
            release_id: release,
            version,
            from_version: from,
            kind,
            strategy: "blue-green",
            promotion_id: None,
            actor: &alice(),
        },
    )
    .await
}

async fn kinds(store: &Store) -> Vec<String> {
    q("SELECT kind FROM events WHERE kind LIKE 'deploy.%' ORDER BY seq")
        .fetch_all(&mut store.read().await.unwrap())
        .await
        .unwrap()
        .iter()
        .map(|r| r.text("kind").unwrap())
        .collect()
}

#[tokio::test]
async fn deployments_steps_outcomes_and_the_live_release() {
    for db in backends() {
        let dir = tempfile::tempdir().unwrap();
        let url = db.fresh_url(dir.path()).await;
        let (store, project) = open(&url).await;
        let name = db.name();
        let p = (project, "demo");

        let d1 = start(&store, project, 11, "1.0.0", None, "deploy")
            .await
            .unwrap();
        // One running deployment per environment.
        let err = start(&store, project, 12, "1.1.0", Some("1.0.0"), "deploy")
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::DeployInProgress, "{name}");
        assert_eq!(err.details.unwrap()["deployment"], d1);
        deployments::step(
            &store,
            p,
            d1,
            &alice(),
            NewStep {
                service: "web",
                name: "switch",
                ok: true,
                detail: json!({"switch_us": 12}),
                started_at: 1000,
                finished_at: 1003,
            },
        )
        .await
        .unwrap();
        deployments::finish(
            &store,
            p,
            d1,
            &alice(),
            &Outcome::Succeeded {
                desired: "{}".into(),
            },
        )
        .await
        .unwrap();
        let d = deployments::get(&mut store.read().await.unwrap(), project, d1)
            .await
            .unwrap();
        assert_eq!(d.state, "succeeded", "{name}");
        assert_eq!(d.steps.len(), 1);
        assert_eq!(d.steps[0].duration_ms, 3);
        assert_eq!(d.steps[0].detail["switch_us"], 12);
        let env = deployments::environment(&mut store.read().await.unwrap(), project, "staging")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(env.live_version.as_deref(), Some("1.0.0"));
        assert_eq!(env.previous_version, None);

        // 1.1.0 goes live: 1.0.0 becomes the one to go back to.
        let d2 = start(&store, project, 12, "1.1.0", Some("1.0.0"), "deploy")
            .await
            .unwrap();
        deployments::finish(
            &store,
            p,
            d2,
            &alice(),
            &Outcome::Succeeded {
                desired: "{}".into(),
            },
        )
        .await
        .unwrap();
        // A failed 1.2.0 changes nothing.
        let d3 = start(&store, project, 13, "1.2.0", Some("1.1.0"), "deploy")
            .await
            .unwrap();
        deployments::finish(
            &store,
            p,
            d3,
            &alice(),
            &Outcome::RolledBack {
                reason: "canary step 10% failed".into(),
            },
        )
        .await
        .unwrap();
        let env = deployments::environment(&mut store.read().await.unwrap(), project, "staging")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(env.live_version.as_deref(), Some("1.1.0"), "{name}");
        assert_eq!(env.previous_version.as_deref(), Some("1.0.0"));
        // A rollback to 1.0.0 swaps them.
        let d4 = start(&store, project, 11, "1.0.0", Some("1.1.0"), "rollback")
            .await
            .unwrap();
        deployments::finish(
            &store,
            p,
            d4,
            &alice(),
            &Outcome::Succeeded {
                desired: "{}".into(),
            },
        )
        .await
        .unwrap();
        let env = deployments::environment(&mut store.read().await.unwrap(), project, "staging")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(env.live_version.as_deref(), Some("1.0.0"), "{name}");
        assert_eq!(env.previous_version.as_deref(), Some("1.1.0"));
        // Finishing twice does nothing.
        deployments::finish(
            &store,
            p,
            d4,
            &alice(),
            &Outcome::Failed {
                reason: "late".into(),
            },
        )
        .await
        .unwrap();

        let list = deployments::list(
            &mut store.read().await.unwrap(),
            project,
            Some("staging"),
            None,
            10,
        )
        .await
        .unwrap();
        let states: Vec<(&str, &str)> = list
            .iter()
            .map(|d| (d.version.as_str(), d.state.as_str()))
            .collect();
        assert_eq!(
            states,
            [
                ("1.0.0", "succeeded"),
                ("1.2.0", "rolled_back"),
                ("1.1.0", "succeeded"),
                ("1.0.0", "succeeded")
            ],
            "{name}"
        );
        assert_eq!(list[1].reason.as_deref(), Some("canary step 10% failed"));
        let by_release = deployments::list(
            &mut store.read().await.unwrap(),
            project,
            None,
            Some(11),
            10,
        )
        .await
        .unwrap();
        assert_eq!(by_release.len(), 2);
        assert_eq!(
            kinds(&store).await,
            [
                "deploy.started",
                "deploy.step",
                "deploy.succeeded",
                "deploy.started",
                "deploy.succeeded",
                "deploy.started",
                "deploy.rolled_back",
                "deploy.started",
                "deploy.rolled_back"
            ],
            "{name}"
        );
        let missing = deployments::get(&mut store.read().await.unwrap(), project, 999)
            .await
            .unwrap_err();
        assert_eq!(
            ouro_core::OuroError::from(missing).code,
            ErrorCode::DeploymentNotFound
        );
    }
}
