use ouro_core::{Actor, ErrorCode, OuroError};
use ouro_plan::items::{self, NewItem};
use ouro_plan::links::{self, NewSubject};
use ouro_store::projects::{self, Project, Visibility};
use ouro_store::testing::{TestDb, backends};
use ouro_store::{PLATFORM_MIGRATIONS, Store, StoreError, events};

struct Fixture {
    store: Store,
    project: Project,
    other: Project,
    actor: Actor,
    _dir: tempfile::TempDir,
}

async fn fixture(db: &TestDb) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = db.fresh_url(dir.path()).await;
    let store = Store::open(&url, &[PLATFORM_MIGRATIONS, ouro_plan::MIGRATIONS].concat())
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", db.name()));
    let alice = ouro_store::accounts::create_user(
        &store,
        &Actor::System("test"),
        "alice",
        "password-123",
        false,
    )
    .await
    .unwrap();
    let project = projects::create(&store, &alice, "demo", "Demo", "", Visibility::Private)
        .await
        .unwrap();
    let other = projects::create(&store, &alice, "other", "Other", "", Visibility::Private)
        .await
        .unwrap();
    let actor = alice.actor();
    for (p, title) in [
        (&project, "a"),
        (&project, "b"),
        (&project, "c"),
        (&other, "x"),
    ] {
        let new = NewItem {
            item_type: "task".into(),
            title: title.into(),
            ..NewItem::default()
        };
        items::create(&store, p, &actor, new).await.unwrap();
    }
    Fixture {
        store,
        project,
        other,
        actor,
        _dir: dir,
    }
}

fn code(e: StoreError) -> ErrorCode {
    OuroError::from(e).code
}

async fn labels(f: &Fixture, key: &str) -> Vec<(String, String)> {
    let mut r = f.store.read().await.unwrap();
    let item = items::get(&mut r, f.project.id, key)
        .await
        .unwrap()
        .unwrap();
    links::list(&mut r, item.id)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.label, l.key))
        .collect()
}

async fn last_payload(f: &Fixture, key: &str) -> serde_json::Value {
    let mut r = f.store.read().await.unwrap();
    let item = items::get(&mut r, f.project.id, key)
        .await
        .unwrap()
        .unwrap();
    let evs = events::for_subject(&mut r, "item", &item.id.to_string(), 50)
        .await
        .unwrap();
    let e = evs.last().unwrap();
    assert_eq!(e.kind, "item.linked");
    e.payload.clone()
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.into(), b.into())
}

#[tokio::test]
async fn item_links_read_from_both_sides() {
    for db in backends() {
        let f = fixture(&db).await;
        let (s, p, a) = (&f.store, &f.project, &f.actor);
        let l = links::link(s, p, a, "DEMO-1", "blocks", "demo-2")
            .await
            .unwrap();
        assert_eq!((l.label.as_str(), l.key.as_str()), ("blocks", "DEMO-2"));
        let payload = last_payload(&f, "DEMO-1").await;
        assert_eq!(payload["link"], "blocks");
        assert_eq!(payload["to"], "DEMO-2");
        links::link(s, p, a, "DEMO-3", "duplicates", "DEMO-1")
            .await
            .unwrap();
        let rel = links::link(s, p, a, "DEMO-2", "relates", "DEMO-3")
            .await
            .unwrap();
        assert_eq!(
            labels(&f, "DEMO-1").await,
            [pair("blocks", "DEMO-2"), pair("duplicated by", "DEMO-3")],
            "{}",
            db.name()
        );
        assert_eq!(
            labels(&f, "DEMO-2").await,
            [pair("blocked by", "DEMO-1"), pair("relates", "DEMO-3")]
        );
        assert_eq!(
            labels(&f, "DEMO-3").await,
            [pair("duplicates", "DEMO-1"), pair("relates", "DEMO-2")]
        );
        // Stored once: the reverse of a `relates` and a repeated link are both refused.
        let e = links::link(s, p, a, "DEMO-3", "relates", "DEMO-2")
            .await
            .unwrap_err();
        assert_eq!(code(e), ErrorCode::LinkExists);
        let e = links::link(s, p, a, "DEMO-1", "blocks", "DEMO-2")
            .await
            .unwrap_err();
        assert_eq!(code(e), ErrorCode::LinkExists);
        // Unlink from the other side; the event says what went.
        links::unlink(s, p, a, "DEMO-3", rel.id).await.unwrap();
        let payload = last_payload(&f, "DEMO-3").await;
        assert_eq!(payload["removed"], true);
        assert_eq!(payload["link"], "relates");
        assert_eq!(labels(&f, "DEMO-3").await, [pair("duplicates", "DEMO-1")]);
        let e = links::unlink(s, p, a, "DEMO-3", rel.id).await.unwrap_err();
        assert_eq!(code(e), ErrorCode::LinkNotFound);
        // A link that does not touch the named item cannot be removed through it.
        let e = links::unlink(s, p, a, "DEMO-3", l.id).await.unwrap_err();
        assert_eq!(code(e), ErrorCode::LinkNotFound);
    }
}

#[tokio::test]
async fn bad_links_are_refused() {
    for db in backends() {
        let f = fixture(&db).await;
        let (s, p, a) = (&f.store, &f.project, &f.actor);
        let cases = [
            ("DEMO-1", "blocks", "DEMO-1", ErrorCode::ValidationFailed),
            ("DEMO-1", "blocks", "OTHER-1", ErrorCode::ValidationFailed),
            ("DEMO-1", "blocks", "DEMO-99", ErrorCode::ItemNotFound),
            ("DEMO-99", "blocks", "DEMO-1", ErrorCode::ItemNotFound),
            ("DEMO-1", "fixes", "DEMO-2", ErrorCode::ValidationFailed),
            ("DEMO-1", "blocks", "x\0", ErrorCode::ItemNotFound),
        ];
        for (from, kind, to, want) in cases {
            let e = links::link(s, p, a, from, kind, to).await.unwrap_err();
            assert_eq!(code(e), want, "{from} {kind} {to} on {}", db.name());
        }
        assert!(labels(&f, "DEMO-1").await.is_empty());
        // The other project's item exists but is not reachable from here.
        let mut r = s.read().await.unwrap();
        assert!(
            items::get(&mut r, f.other.id, "OTHER-1")
                .await
                .unwrap()
                .is_some()
        );
    }
}

#[tokio::test]
async fn subject_links_are_idempotent() {
    for db in backends() {
        let f = fixture(&db).await;
        let (s, p, a) = (&f.store, &f.project, &f.actor);
        let subject = NewSubject {
            subject_type: "commit".into(),
            id: "abc123".into(),
            title: "fix DEMO-1".into(),
            url: None,
        };
        let made = links::link_subject(s, p, a, "DEMO-1", &subject, Some(7))
            .await
            .unwrap();
        assert!(made.is_some());
        let payload = last_payload(&f, "DEMO-1").await;
        assert_eq!(payload["subject"]["type"], "commit");
        assert_eq!(payload["subject"]["id"], "abc123");
        let again = links::link_subject(s, p, a, "DEMO-1", &subject, Some(8))
            .await
            .unwrap();
        assert!(again.is_none());
        let mut r = s.read().await.unwrap();
        let item = items::get(&mut r, p.id, "DEMO-1").await.unwrap().unwrap();
        let subs = links::list_subjects(&mut r, item.id).await.unwrap();
        assert_eq!(subs.len(), 1, "{}", db.name());
        assert_eq!(subs[0].source_event_seq, Some(7));
        let bad = NewSubject {
            id: "a\0".into(),
            ..subject.clone()
        };
        let e = links::link_subject(s, p, a, "DEMO-1", &bad, None)
            .await
            .unwrap_err();
        assert_eq!(code(e), ErrorCode::ValidationFailed);
    }
}

async fn push(f: &Fixture, project: &Project, commits: serde_json::Value) {
    let mut tx = f.store.begin().await.unwrap();
    tx.append(
        ouro_core::NewEvent::new(
            ouro_core::events::CODE_PUSHED,
            &f.actor,
            "repo-1",
            serde_json::json!({"ref": "refs/heads/main", "commits": commits}),
        )
        .in_project(project.id, &project.slug),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn subjects(f: &Fixture, project: &Project, key: &str) -> Vec<(String, Option<i64>)> {
    let mut r = f.store.read().await.unwrap();
    let item = items::get(&mut r, project.id, key).await.unwrap().unwrap();
    links::list_subjects(&mut r, item.id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.subject_id, s.source_event_seq))
        .collect()
}

#[tokio::test]
async fn the_reference_consumer_links_commits_once() {
    for db in backends() {
        let f = fixture(&db).await;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let runner = tokio::spawn(ouro_store::consumers::run(
            f.store.clone(),
            std::sync::Arc::new(links::References),
            stop_rx,
        ));
        let commit = serde_json::json!([
            {"id": "c1", "message": "fixes DEMO-1 and DEMO-99, see OTHER-1"},
        ]);
        // The same push twice (a redelivery) and one in the other project naming DEMO-2.
        push(&f, &f.project, commit.clone()).await;
        push(&f, &f.project, commit).await;
        push(
            &f,
            &f.other,
            serde_json::json!([{"id": "c2", "message": "DEMO-2 OTHER-1"}]),
        )
        .await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let a = subjects(&f, &f.project, "DEMO-1").await;
            let o = subjects(&f, &f.other, "OTHER-1").await;
            if !a.is_empty() && !o.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no links on {}",
                db.name()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // Events are handled in order and the other project's push came last, so both DEMO
        // pushes have been handled by now.
        let a = subjects(&f, &f.project, "DEMO-1").await;
        assert_eq!(a.len(), 1, "{}", db.name());
        assert_eq!(a[0].0, "c1");
        assert!(a[0].1.is_some());
        assert!(subjects(&f, &f.project, "DEMO-2").await.is_empty());
        assert_eq!(subjects(&f, &f.other, "OTHER-1").await.len(), 1);
        let _ = stop_tx.send(true);
        runner.await.unwrap();
    }
}
