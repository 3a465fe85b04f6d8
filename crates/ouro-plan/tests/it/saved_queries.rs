use ouro_core::{Actor, ErrorCode, OuroError};
use ouro_plan::saved_queries::{self as sq, Caller, SavedQueryPatch};
use ouro_store::projects::{self, Visibility};
use ouro_store::testing::{TestDb, backends};
use ouro_store::{PLATFORM_MIGRATIONS, Store, StoreError};

struct Fx {
    store: Store,
    project_id: i64,
    other_project_id: i64,
    /// A maintainer (may share) and two plain viewers.
    alice: Caller,
    bob: Caller,
    carol: Caller,
    _dir: tempfile::TempDir,
}

async fn fx(db: &TestDb) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let url = db.fresh_url(dir.path()).await;
    let store = Store::open(&url, &[PLATFORM_MIGRATIONS, ouro_plan::MIGRATIONS].concat())
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", db.name()));
    let mut ids = Vec::new();
    let mut first = None;
    for name in ["alice", "bob", "carol"] {
        let u = ouro_store::accounts::create_user(
            &store,
            &Actor::System("test"),
            name,
            "password-123",
            false,
        )
        .await
        .unwrap();
        ids.push(u.id);
        first.get_or_insert(u);
    }
    let alice = first.unwrap();
    let p = projects::create(&store, &alice, "pay-api", "Pay", "", Visibility::Private)
        .await
        .unwrap();
    let o = projects::create(&store, &alice, "other", "Other", "", Visibility::Private)
        .await
        .unwrap();
    let caller = |i: usize, can_share| Caller {
        user_id: ids[i],
        can_share,
    };
    Fx {
        store,
        project_id: p.id,
        other_project_id: o.id,
        alice: caller(0, true),
        bob: caller(1, false),
        carol: caller(2, false),
        _dir: dir,
    }
}

fn code(e: StoreError) -> ErrorCode {
    OuroError::from(e).code
}

fn names(list: &[sq::SavedQuery]) -> Vec<&str> {
    list.iter().map(|s| s.name.as_str()).collect()
}

#[tokio::test]
async fn personal_queries_are_private_and_shared_ones_visible_to_all() {
    for db in backends() {
        let f = fx(&db).await;
        let (s, p) = (&f.store, f.project_id);
        sq::create(s, p, f.bob, "mine", "state:open", false)
            .await
            .unwrap();
        let shared = sq::create(s, p, f.alice, "team", "type:bug", true)
            .await
            .unwrap();
        assert!(shared.shared);
        sq::create(s, p, f.alice, "alice's", "priority:high", false)
            .await
            .unwrap();
        sq::create(s, f.other_project_id, f.bob, "elsewhere", "", false)
            .await
            .unwrap();

        let mut conn = s.read().await.unwrap();
        let bob = sq::list(&mut conn, p, f.bob.user_id).await.unwrap();
        assert_eq!(names(&bob), ["team", "mine"], "{}", db.name());
        let carol = sq::list(&mut conn, p, f.carol.user_id).await.unwrap();
        assert_eq!(names(&carol), ["team"]);
        let alice = sq::list(&mut conn, p, f.alice.user_id).await.unwrap();
        assert_eq!(names(&alice), ["team", "alice's"]);
    }
}

#[tokio::test]
async fn duplicates_are_refused_per_owner_and_among_shared() {
    for db in backends() {
        let f = fx(&db).await;
        let (s, p) = (&f.store, f.project_id);
        sq::create(s, p, f.bob, "bugs", "type:bug", false)
            .await
            .unwrap();
        let e = sq::create(s, p, f.bob, "bugs", "type:task", false)
            .await
            .unwrap_err();
        assert_eq!(code(e), ErrorCode::SavedQueryNameTaken, "{}", db.name());
        // Another user, and the shared list, have their own namespaces.
        sq::create(s, p, f.carol, "bugs", "type:bug", false)
            .await
            .unwrap();
        sq::create(s, p, f.alice, "bugs", "type:bug", true)
            .await
            .unwrap();
        // NULL owners must still collide: this is what the COALESCE index is for.
        let e = sq::create(s, p, f.alice, "bugs", "type:bug", true)
            .await
            .unwrap_err();
        assert_eq!(code(e), ErrorCode::SavedQueryNameTaken, "{}", db.name());
        // Renaming onto a taken name is refused too.
        let other = sq::create(s, p, f.bob, "other", "", false).await.unwrap();
        let e = sq::update(
            s,
            p,
            f.bob,
            other.id,
            SavedQueryPatch {
                name: Some("bugs".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(code(e), ErrorCode::SavedQueryNameTaken);
    }
}

#[tokio::test]
async fn invalid_queries_and_names_are_refused() {
    for db in backends() {
        let f = fx(&db).await;
        let (s, p) = (&f.store, f.project_id);
        let e = OuroError::from(
            sq::create(s, p, f.bob, "bad", "bogus:x", false)
                .await
                .unwrap_err(),
        );
        assert_eq!(e.code, ErrorCode::InvalidItemQuery);
        let d = e.details.unwrap();
        assert!(d["position"].as_u64().is_some(), "{d}");
        assert!(d["caret"].as_str().unwrap().contains('^'));
        for name in ["", "   ", &"x".repeat(101)] {
            let e = sq::create(s, p, f.bob, name, "", false).await.unwrap_err();
            assert_eq!(code(e), ErrorCode::ValidationFailed, "{name:?}");
        }
        sq::create(s, p, f.bob, &"é".repeat(100), "", false)
            .await
            .unwrap();
        let mut conn = s.read().await.unwrap();
        assert_eq!(
            sq::list(&mut conn, p, f.bob.user_id).await.unwrap().len(),
            1
        );
    }
}

#[tokio::test]
async fn updates_check_the_version_and_permissions() {
    for db in backends() {
        let f = fx(&db).await;
        let (s, p) = (&f.store, f.project_id);
        let mine = sq::create(s, p, f.bob, "mine", "state:open", false)
            .await
            .unwrap();
        let patch = |v: i64, q: &str| SavedQueryPatch {
            name: None,
            query: Some(q.into()),
            version: Some(v),
        };
        let up = sq::update(s, p, f.bob, mine.id, patch(1, "type:bug"))
            .await
            .unwrap();
        assert_eq!((up.version, up.query.as_str()), (2, "type:bug"));
        let e = OuroError::from(
            sq::update(s, p, f.bob, mine.id, patch(1, "type:task"))
                .await
                .unwrap_err(),
        );
        assert_eq!(e.code, ErrorCode::StaleVersion, "{}", db.name());
        assert_eq!(e.details.unwrap()["current_version"], 2);
        let e = sq::update(s, p, f.bob, mine.id, patch(2, "bogus:x"))
            .await
            .unwrap_err();
        assert_eq!(code(e), ErrorCode::InvalidItemQuery);

        // Someone else's personal query does not exist for them, even for a maintainer.
        let e = sq::update(s, p, f.alice, mine.id, patch(2, ""))
            .await
            .unwrap_err();
        assert_eq!(code(e), ErrorCode::SavedQueryNotFound);
        let e = sq::delete(s, p, f.carol, mine.id).await.unwrap_err();
        assert_eq!(code(e), ErrorCode::SavedQueryNotFound);
        // Nor from another project.
        let e = sq::delete(s, f.other_project_id, f.bob, mine.id)
            .await
            .unwrap_err();
        assert_eq!(code(e), ErrorCode::SavedQueryNotFound);

        // Shared queries: only maintainers create, change or delete them.
        let e = sq::create(s, p, f.bob, "team", "", true).await.unwrap_err();
        assert_eq!(code(e), ErrorCode::Forbidden);
        let team = sq::create(s, p, f.alice, "team", "", true).await.unwrap();
        let e = sq::update(s, p, f.bob, team.id, patch(1, "type:bug"))
            .await
            .unwrap_err();
        assert_eq!(code(e), ErrorCode::Forbidden);
        let e = sq::delete(s, p, f.bob, team.id).await.unwrap_err();
        assert_eq!(code(e), ErrorCode::Forbidden);
        sq::delete(s, p, f.alice, team.id).await.unwrap();
        sq::delete(s, p, f.bob, mine.id).await.unwrap();
        let mut conn = s.read().await.unwrap();
        assert!(
            sq::list(&mut conn, p, f.bob.user_id)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
