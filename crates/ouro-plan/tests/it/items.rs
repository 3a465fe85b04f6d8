use ouro_core::{Actor, ErrorCode, OuroError};
use ouro_plan::items::{self, ItemFilter, ItemPatch, ListPage, NewItem};
use ouro_store::projects::{self, Project, Visibility};
use ouro_store::testing::{TestDb, backends};
use ouro_store::{PLATFORM_MIGRATIONS, Store, StoreError};

/// A fresh store with the platform's and Plan's migrations, plus a project owned by `alice`.
struct Fixture {
    store: Store,
    project: Project,
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
    let project = projects::create(&store, &alice, "pay-api", "Pay", "", Visibility::Private)
        .await
        .unwrap();
    Fixture {
        store,
        project,
        actor: alice.actor(),
        _dir: dir,
    }
}

fn new(ty: &str, title: &str) -> NewItem {
    NewItem {
        item_type: ty.into(),
        title: title.into(),
        ..NewItem::default()
    }
}

fn code(e: StoreError) -> ErrorCode {
    OuroError::from(e).code
}

#[tokio::test]
async fn parallel_creates_get_unique_sequential_keys() {
    for db in backends() {
        let f = fixture(&db).await;
        let mut tasks = Vec::new();
        for i in 0..12 {
            let (store, project, actor) = (f.store.clone(), f.project.clone(), f.actor.clone());
            tasks.push(tokio::spawn(async move {
                items::create(&store, &project, &actor, new("task", &format!("t{i}")))
                    .await
                    .map(|it| it.number)
            }));
        }
        let mut numbers = Vec::new();
        for t in tasks {
            numbers.push(t.await.unwrap().unwrap());
        }
        numbers.sort();
        assert_eq!(numbers, (1..=12).collect::<Vec<_>>(), "{}", db.name());
        let first = items::get(&mut f.store.read().await.unwrap(), f.project.id, "payapi-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.key, "PAYAPI-1");
        assert_eq!(first.state, "New");
        // A failed create does not consume a number.
        let e = items::create(&f.store, &f.project, &f.actor, new("nope", "x"))
            .await
            .unwrap_err();
        assert_eq!(code(e), ErrorCode::ValidationFailed);
        let it = items::create(&f.store, &f.project, &f.actor, new("bug", "b"))
            .await
            .unwrap();
        assert_eq!(it.key, "PAYAPI-13");
    }
}

#[tokio::test]
async fn hierarchy_epics_and_filters() {
    for db in backends() {
        let f = fixture(&db).await;
        let c = |n: NewItem| items::create(&f.store, &f.project, &f.actor, n);
        let epic = c(new("epic", "Checkout")).await.unwrap();
        let feature = c(NewItem {
            parent: Some(epic.key.clone()),
            ..new("feature", "Cards")
        })
        .await
        .unwrap();
        let story = c(NewItem {
            parent: Some(feature.key.clone()),
            labels: vec!["ui".into()],
            assignee: Some("alice".into()),
            ..new("story", "Pay by card")
        })
        .await
        .unwrap();
        assert_eq!(story.epic.as_deref(), Some(epic.key.as_str()));
        let task = c(NewItem {
            parent: Some(story.key.clone()),
            ..new("task", "Form")
        })
        .await
        .unwrap();
        assert_eq!(task.epic.as_deref(), Some(epic.key.as_str()));
        // A task cannot sit under an epic.
        let e = c(NewItem {
            parent: Some(epic.key.clone()),
            ..new("task", "x")
        })
        .await
        .unwrap_err();
        assert_eq!(code(e), ErrorCode::ValidationFailed);
        // Moving the feature out of the epic takes its story and task along.
        items::update(
            &f.store,
            &f.project,
            &f.actor,
            &feature.key,
            ItemPatch {
                parent: Some(None),
                ..ItemPatch::default()
            },
        )
        .await
        .unwrap();
        let mut r = f.store.read().await.unwrap();
        let t = items::get(&mut r, f.project.id, &task.key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t.epic, None);

        let list = |filter: ItemFilter| {
            let store = f.store.clone();
            let pid = f.project.id;
            async move {
                items::list(
                    &mut store.read().await.unwrap(),
                    pid,
                    &filter,
                    &ListPage {
                        cursor: None,
                        limit: 2,
                    },
                )
                .await
                .unwrap()
            }
        };
        let page = list(ItemFilter::default()).await;
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor, Some(format!("r:{}", page.items[1].rank)));
        let only = list(ItemFilter {
            label: Some("ui".into()),
            ..ItemFilter::default()
        })
        .await;
        assert_eq!(only.items.len(), 1);
        assert_eq!(only.items[0].labels, vec!["ui"]);
        let by_text = list(ItemFilter {
            text: Some("CARD pay".into()),
            ..ItemFilter::default()
        })
        .await;
        assert_eq!(by_text.items[0].key, story.key);
        let assigned = list(ItemFilter {
            assignee: Some("alice".into()),
            ..ItemFilter::default()
        })
        .await;
        assert_eq!(assigned.items.len(), 1);
    }
}

#[tokio::test]
async fn transitions_follow_the_workflow() {
    for db in backends() {
        let f = fixture(&db).await;
        let it = items::create(&f.store, &f.project, &f.actor, new("story", "s"))
            .await
            .unwrap();
        let t =
            |to: &'static str| items::transition(&f.store, &f.project, &f.actor, &it.key, to, None);
        assert_eq!(t("done").await.unwrap().state, "Done");
        let e = OuroError::from(t("In progress").await.unwrap_err());
        assert_eq!(e.code, ErrorCode::InvalidTransition);
        assert_eq!(e.details.unwrap()["allowed"], serde_json::json!(["Ready"]));
        let back = t("Ready").await.unwrap();
        assert_eq!(back.state_category.as_str(), "todo");
        let inc = items::create(&f.store, &f.project, &f.actor, new("incident", "down"))
            .await
            .unwrap();
        assert_eq!(inc.state, "Open");
    }
}

async fn list_all(f: &Fixture, filter: ItemFilter) -> Vec<items::Item> {
    let mut r = f.store.read().await.unwrap();
    let page = ListPage {
        cursor: None,
        limit: 500,
    };
    items::list(&mut r, f.project.id, &filter, &page)
        .await
        .unwrap()
        .items
}

async fn keys_in_order(f: &Fixture) -> Vec<String> {
    list_all(f, ItemFilter::default())
        .await
        .into_iter()
        .map(|i| i.key)
        .collect()
}

fn before(k: &str) -> items::RankMove {
    items::RankMove {
        before: Some(k.into()),
        after: None,
    }
}

fn after(k: &str) -> items::RankMove {
    items::RankMove {
        before: None,
        after: Some(k.into()),
    }
}

#[tokio::test]
async fn moves_reorder_the_backlog_writing_one_row() {
    for db in backends() {
        let f = fixture(&db).await;
        let mut k = Vec::new();
        for t in ["a", "b", "c", "d", "e"] {
            k.push(
                items::create(&f.store, &f.project, &f.actor, new("task", t))
                    .await
                    .unwrap()
                    .key,
            );
        }
        assert_eq!(keys_in_order(&f).await, k, "{}: creation order", db.name());
        let mv = |key: String, to: items::RankMove| {
            let (store, project, actor) = (f.store.clone(), f.project.clone(), f.actor.clone());
            async move { items::move_rank(&store, &project, &actor, &key, to).await }
        };
        let old = list_all(&f, ItemFilter::default()).await;
        let moved = mv(k[4].clone(), before(&k[0])).await.unwrap();
        // Only the moved row changed: every other item keeps its rank and version.
        let now = list_all(&f, ItemFilter::default()).await;
        for o in &old {
            let n = now.iter().find(|n| n.id == o.id).unwrap();
            if o.key == moved.key {
                assert_eq!(n.version, o.version + 1);
                assert_ne!(n.rank, o.rank);
            } else {
                assert_eq!((n.version, &n.rank), (o.version, &o.rank), "{}", db.name());
            }
        }
        mv(k[0].clone(), after(&k[2])).await.unwrap();
        // Into the last place, and before the first.
        mv(k[1].clone(), after(&k[3])).await.unwrap();
        let expect = [&k[4], &k[2], &k[0], &k[3], &k[1]].map(|s| s.clone());
        assert_eq!(keys_in_order(&f).await, expect, "{}", db.name());
        // A new item goes after the current last one.
        let last = items::create(&f.store, &f.project, &f.actor, new("task", "f"))
            .await
            .unwrap();
        assert_eq!(keys_in_order(&f).await.last(), Some(&last.key));

        let hist = items::history(&mut f.store.read().await.unwrap(), f.project.id, &moved.key)
            .await
            .unwrap();
        let ev = hist.last().unwrap();
        assert_eq!(ev.kind, "item.updated");
        assert_eq!(ev.payload["changes"]["rank"]["new"], moved.rank);

        let e = mv(k[0].clone(), before("PAYAPI-99")).await.unwrap_err();
        assert_eq!(code(e), ErrorCode::ItemNotFound);
        let both = items::RankMove {
            before: Some(k[1].clone()),
            after: Some(k[2].clone()),
        };
        assert_eq!(
            code(mv(k[0].clone(), both).await.unwrap_err()),
            ErrorCode::ValidationFailed
        );
        assert_eq!(
            code(mv(k[0].clone(), items::RankMove::default()).await.unwrap_err()),
            ErrorCode::ValidationFailed
        );
        assert_eq!(
            code(mv(k[0].clone(), before(&k[0])).await.unwrap_err()),
            ErrorCode::ValidationFailed
        );
    }
}

#[tokio::test]
async fn old_zero_padded_ranks_keep_working() {
    for db in backends() {
        let f = fixture(&db).await;
        let mut k = Vec::new();
        for t in ["a", "b", "c"] {
            k.push(
                items::create(&f.store, &f.project, &f.actor, new("task", t))
                    .await
                    .unwrap()
                    .key,
            );
        }
        // What the placeholder ranks looked like; 10 and 20 end in 0, which rank refuses as is.
        let mut tx = f.store.begin().await.unwrap();
        for (n, r) in [(1, "000000000010"), (2, "000000000020"), (3, "000000000030")] {
            ouro_store::q("UPDATE items SET rank = $1 WHERE project_id = $2 AND number = $3")
                .bind(r)
                .bind(f.project.id)
                .bind(n)
                .execute(&mut tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let d = items::create(&f.store, &f.project, &f.actor, new("task", "d"))
            .await
            .unwrap();
        items::move_rank(&f.store, &f.project, &f.actor, &d.key, after(&k[0]))
            .await
            .unwrap();
        items::move_rank(&f.store, &f.project, &f.actor, &k[2], before(&k[0]))
            .await
            .unwrap();
        let expect = [&k[2], &k[0], &d.key, &k[1]].map(|s| s.clone());
        assert_eq!(keys_in_order(&f).await, expect, "{}", db.name());
    }
}

#[tokio::test]
async fn concurrent_moves_never_share_a_rank() {
    for db in backends() {
        let f = fixture(&db).await;
        let mut k = Vec::new();
        for i in 0..6 {
            k.push(
                items::create(&f.store, &f.project, &f.actor, new("task", &format!("t{i}")))
                    .await
                    .unwrap()
                    .key,
            );
        }
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (store, project, actor) = (f.store.clone(), f.project.clone(), f.actor.clone());
            // Many moves aim at the same few gaps (around items 0 and 1) at once.
            let key = k[2 + i % 4].clone();
            let target = k[i % 2].clone();
            let to = if i % 3 == 0 { before(&target) } else { after(&target) };
            tasks.push(tokio::spawn(async move {
                items::move_rank(&store, &project, &actor, &key, to).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let all = list_all(&f, ItemFilter::default()).await;
        assert_eq!(all.len(), 6);
        let ranks: Vec<&str> = all.iter().map(|i| i.rank.as_str()).collect();
        let mut sorted = ranks.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ranks, sorted, "{}: distinct ranks in list order", db.name());
        assert!(ranks.iter().all(|r| ouro_plan::rank::is_valid(r)));
        // Each item moved last got a version bump per move: 20 moves in all.
        let bumps: i64 = all.iter().map(|i| i.version - 1).sum();
        assert_eq!(bumps, 20, "{}", db.name());
    }
}
