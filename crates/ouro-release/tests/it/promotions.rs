//! Promotions on both databases: order enforced, gates block then allow (wait timer, window with a
//! fixed clock), approvals with no-self-approval, rejection, refusals with stable codes, events.

use ouro_core::ErrorCode;
use ouro_release::promotions::{self, User};
use ouro_store::testing::backends;
use ouro_store::{Store, q};

const PATH: &str = r#"environments:
  dev: {}
  staging:
    wait: 10m
    approvals: {required: 1, from: [maintainers], no-self-approval: true}
  production:
    windows: [{cron: "* 9-17 * * 1-5", timezone: "UTC"}]
    checks: [tests-passed]
"#;

fn at(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

struct Fx {
    store: Store,
    project: i64,
    users: Vec<(i64, String)>,
    _dir: tempfile::TempDir,
}

impl Fx {
    fn user(&self, name: &str) -> User<'_> {
        let (id, n) = self.users.iter().find(|(_, n)| n == name).unwrap();
        User { id: *id, name: n }
    }

    async fn release(&self, version: &str, state: &str, summary: &str) {
        let mut tx = self.store.begin().await.unwrap();
        let pat = self.user("pat").id;
        q(
            "INSERT INTO release_releases (project_id, repo_id, version, tag, sha, state, notes, \
           test_summary, created_at, published_by, published_at) \
           VALUES ($1, 999, $2, $3, 'abc', $4, '', $5, 1, $6, 1)",
        )
        .bind(self.project)
        .bind(version)
        .bind(format!("v{version}"))
        .bind(state)
        .bind(summary)
        .bind(pat)
        .execute(&mut tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    async fn kinds(&self) -> Vec<String> {
        q("SELECT kind FROM events WHERE project_id = $1 AND (kind LIKE 'promotion.%' OR kind LIKE 'approval.%') ORDER BY seq")
            .bind(self.project)
            .fetch_all(&mut self.store.read().await.unwrap())
            .await
            .unwrap()
            .iter()
            .map(|r| r.text("kind").unwrap())
            .collect()
    }
}

async fn setup(db: &ouro_store::testing::TestDb) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let url = db.fresh_url(dir.path()).await;
    let (store, project) = crate::support::store_with_project(&url).await;
    let mut tx = store.begin().await.unwrap();
    let mut users = Vec::new();
    for (name, role) in [
        ("ann", "maintainer"),
        ("pat", "maintainer"),
        ("rex", "maintainer"),
        ("dev1", "developer"),
    ] {
        let id = q(
            "INSERT INTO users (name, password_hash, created_at) VALUES ($1, 'x', 1) RETURNING id",
        )
        .bind(name)
        .fetch_one(&mut tx)
        .await
        .unwrap()
        .i64("id")
        .unwrap();
        q("INSERT INTO members (project_id, user_id, role, created_at) VALUES ($1, $2, $3, 1)")
            .bind(project)
            .bind(id)
            .bind(role)
            .execute(&mut tx)
            .await
            .unwrap();
        users.push((id, name.to_string()));
    }
    tx.commit().await.unwrap();
    let fx = Fx {
        store,
        project,
        users,
        _dir: dir,
    };
    let ann = fx.user("ann");
    promotions::put_settings(
        &fx.store,
        project,
        &ouro_core::Actor::System("test"),
        Some(ann.id),
        PATH,
        1,
    )
    .await
    .unwrap();
    fx
}

fn root() -> std::path::PathBuf {
    // No repository exists there: the path comes from the project settings.
    std::path::PathBuf::from("/nonexistent-ouro-repos")
}

#[tokio::test]
async fn order_is_enforced_and_gates_block_then_allow() {
    for db in backends() {
        let fx = setup(&db).await;
        let name = db.name();
        fx.release(
            "1.0.0",
            "published",
            r#"{"totals": {"failed": 0, "errored": 0}, "gate_passed": true}"#,
        )
        .await;
        let t0 = at("2026-03-06T10:00:00Z");
        let rex = fx.user("rex");

        let e = promotions::request(&fx.store, &root(), fx.project, "1.0.0", "staging", &rex, t0)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::PromotionOutOfOrder, "{name}: {e:?}");
        assert!(
            e.message.contains("before `dev` succeeded"),
            "{}",
            e.message
        );

        let dev = promotions::request(&fx.store, &root(), fx.project, "1.0.0", "dev", &rex, t0)
            .await
            .unwrap();
        assert_eq!(dev.state, "approved", "{name}: no gates, approved at once");
        assert_eq!(dev.config_source, "settings");
        let e = promotions::request(&fx.store, &root(), fx.project, "1.0.0", "dev", &rex, t0)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::PromotionExists, "{name}");

        let st = promotions::request(&fx.store, &root(), fx.project, "1.0.0", "staging", &rex, t0)
            .await
            .unwrap();
        assert_eq!(st.state, "requested", "{name}");
        let status: Vec<(&str, &str)> = st
            .gates
            .iter()
            .map(|g| (g.name.as_str(), g.status.as_str()))
            .collect();
        assert_eq!(
            status,
            [("approvals", "pending"), ("wait", "pending")],
            "{name}"
        );

        // The requester, the publisher and a developer may not approve.
        for who in ["rex", "pat", "dev1"] {
            let e = promotions::decide(&fx.store, fx.project, st.id, &fx.user(who), true, "", t0)
                .await
                .unwrap_err();
            assert_eq!(e.code, ErrorCode::ApprovalNotAllowed, "{name}: {who}");
        }
        let p = promotions::decide(
            &fx.store,
            fx.project,
            st.id,
            &fx.user("ann"),
            true,
            "ship it",
            t0 + 60_000,
        )
        .await
        .unwrap();
        assert_eq!(p.state, "requested", "{name}: the wait timer still runs");
        assert_eq!(p.gates[0].status.as_str(), "passed");
        assert_eq!(p.approvals.len(), 1);
        assert_eq!(
            (
                p.approvals[0].user.as_str(),
                p.approvals[0].comment.as_str()
            ),
            ("ann", "ship it")
        );
        let e = promotions::decide(&fx.store, fx.project, st.id, &fx.user("ann"), true, "", t0)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ApprovalDuplicate, "{name}");

        // Production waits for staging.
        let e = promotions::request(
            &fx.store,
            &root(),
            fx.project,
            "1.0.0",
            "production",
            &rex,
            t0,
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::PromotionOutOfOrder, "{name}");

        assert_eq!(
            promotions::reevaluate(&fx.store, Some(fx.project), t0 + 599_000)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            promotions::reevaluate(&fx.store, Some(fx.project), t0 + 600_000)
                .await
                .unwrap(),
            1
        );
        let p = promotions::get(&mut fx.store.read().await.unwrap(), fx.project, st.id)
            .await
            .unwrap();
        assert_eq!(p.state, "approved", "{name}");
        assert_eq!(p.decided_at, Some(t0 + 600_000));
        let e = promotions::decide(&fx.store, fx.project, st.id, &fx.user("pat"), false, "", t0)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::PromotionClosed, "{name}");

        // Production: a window on weekdays 9-17 UTC. Saturday: pending; Monday 10:00: approved.
        let sat = at("2026-03-07T12:00:00Z");
        let pr = promotions::request(
            &fx.store,
            &root(),
            fx.project,
            "1.0.0",
            "production",
            &rex,
            sat,
        )
        .await
        .unwrap();
        assert_eq!(pr.state, "requested", "{name}");
        assert!(
            pr.gates
                .iter()
                .any(|g| g.name == "window" && g.status.as_str() == "pending")
        );
        assert_eq!(
            promotions::reevaluate(&fx.store, None, at("2026-03-08T23:59:00Z"))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            promotions::reevaluate(&fx.store, None, at("2026-03-09T10:00:00Z"))
                .await
                .unwrap(),
            1
        );

        let rel = promotions::release(&mut fx.store.read().await.unwrap(), fx.project, "1.0.0")
            .await
            .unwrap();
        let all = promotions::list(&mut fx.store.read().await.unwrap(), rel.id)
            .await
            .unwrap();
        let states: Vec<(&str, &str)> = all
            .iter()
            .map(|p| (p.environment.as_str(), p.state.as_str()))
            .collect();
        assert_eq!(
            states,
            [
                ("dev", "approved"),
                ("staging", "approved"),
                ("production", "approved")
            ]
        );
        assert_eq!(
            fx.kinds().await,
            [
                "promotion.requested",
                "promotion.approved",
                "promotion.requested",
                "approval.requested",
                "approval.decided",
                "promotion.approved",
                "promotion.requested",
                "promotion.approved"
            ],
            "{name}"
        );
        let placed = promotions::placements(
            &mut fx.store.read().await.unwrap(),
            fx.project,
            "production",
        )
        .await
        .unwrap();
        assert_eq!(placed.len(), 1);
        assert_eq!(placed[0].release, "1.0.0");
    }
}

#[tokio::test]
async fn a_rejection_closes_the_request_and_a_new_one_may_follow() {
    for db in backends() {
        let fx = setup(&db).await;
        let name = db.name();
        fx.release(
            "2.0.0",
            "published",
            r#"{"totals": {"failed": 0, "errored": 0}, "gate_passed": true}"#,
        )
        .await;
        let rex = fx.user("rex");
        promotions::request(&fx.store, &root(), fx.project, "2.0.0", "dev", &rex, 1000)
            .await
            .unwrap();
        let st = promotions::request(
            &fx.store,
            &root(),
            fx.project,
            "2.0.0",
            "staging",
            &rex,
            1000,
        )
        .await
        .unwrap();
        let p = promotions::decide(
            &fx.store,
            fx.project,
            st.id,
            &fx.user("ann"),
            false,
            "not on a Friday",
            2000,
        )
        .await
        .unwrap();
        assert_eq!(p.state, "rejected", "{name}");
        assert_eq!(p.reason.as_deref(), Some("rejected by ann"));
        assert_eq!(p.approvals[0].decision, "reject");
        assert_eq!(p.approvals[0].comment, "not on a Friday");
        assert_eq!(p.decided_at, Some(2000));
        let again = promotions::request(
            &fx.store,
            &root(),
            fx.project,
            "2.0.0",
            "staging",
            &rex,
            3000,
        )
        .await
        .unwrap();
        assert_eq!(again.state, "requested", "{name}");
        assert_ne!(again.id, st.id);
        let kinds = fx.kinds().await;
        assert!(
            kinds.contains(&"promotion.rejected".to_string()),
            "{name}: {kinds:?}"
        );
    }
}

#[tokio::test]
async fn refusals_have_stable_codes() {
    for db in backends() {
        let fx = setup(&db).await;
        let name = db.name();
        let rex = fx.user("rex");
        fx.release("0.1.0", "draft", "").await;
        fx.release("0.2.0", "withdrawn", "").await;
        fx.release(
            "0.3.0",
            "published",
            r#"{"totals": {"failed": 2, "errored": 0}, "gate_passed": null}"#,
        )
        .await;
        let req = |v: &'static str, env: &'static str| {
            let rex = rex.clone();
            let fx = &fx;
            async move {
                promotions::request(&fx.store, &root(), fx.project, v, env, &rex, 1000)
                    .await
                    .unwrap_err()
            }
        };
        assert_eq!(
            req("0.1.0", "dev").await.code,
            ErrorCode::PromotionNotPublished,
            "{name}"
        );
        assert_eq!(
            req("0.2.0", "dev").await.code,
            ErrorCode::PromotionNotPublished,
            "{name}"
        );
        assert_eq!(
            req("9.9.9", "dev").await.code,
            ErrorCode::ReleaseNotFound,
            "{name}"
        );
        assert_eq!(
            req("0.3.0", "qa").await.code,
            ErrorCode::EnvironmentNotFound,
            "{name}"
        );
        // Through staging to production, whose tests-passed check fails: refused with the gates.
        promotions::request(&fx.store, &root(), fx.project, "0.3.0", "dev", &rex, 1000)
            .await
            .unwrap();
        let st = promotions::request(
            &fx.store,
            &root(),
            fx.project,
            "0.3.0",
            "staging",
            &rex,
            1000,
        )
        .await
        .unwrap();
        promotions::decide(
            &fx.store,
            fx.project,
            st.id,
            &fx.user("ann"),
            true,
            "",
            1000,
        )
        .await
        .unwrap();
        promotions::reevaluate(&fx.store, None, 1_000_000)
            .await
            .unwrap();
        let e = req("0.3.0", "production").await;
        assert_eq!(e.code, ErrorCode::PromotionGateFailed, "{name}: {e:?}");
        assert!(e.message.contains("2 failed tests"), "{}", e.message);
        let gates = &e.details.unwrap()["gates"];
        assert!(
            gates
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == "tests-passed" && g["status"] == "failed")
        );

        let bad = promotions::put_settings(
            &fx.store,
            fx.project,
            &ouro_core::Actor::System("test"),
            None,
            "environments:\n  dev:\n    after: nope\n",
            1,
        )
        .await
        .unwrap_err();
        assert_eq!(bad.code, ErrorCode::EnvironmentsInvalid, "{name}");
        let diags = bad.details.unwrap()["diagnostics"].to_string();
        assert!(diags.contains("release.env_unknown_after"), "{diags}");
    }
}
