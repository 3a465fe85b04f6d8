use ouro_core::{Actor, ErrorCode, OuroError};
use ouro_plan::items::{self, ItemFilter, ItemPatch, NewItem, Search};
use ouro_store::PageReq;
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
                    PageReq::new(0, Some(2)),
                )
                .await
                .unwrap()
            }
        };
        let page = list(ItemFilter::default()).await;
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor.as_deref(), Some("2"));
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
    items::list(&mut r, f.project.id, &filter, PageReq::new(0, Some(500)))
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
            code(
                mv(k[0].clone(), items::RankMove::default())
                    .await
                    .unwrap_err()
            ),
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
        for (n, r) in [
            (1, "000000000010"),
            (2, "000000000020"),
            (3, "000000000030"),
        ] {
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
                items::create(
                    &f.store,
                    &f.project,
                    &f.actor,
                    new("task", &format!("t{i}")),
                )
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
            let to = if i % 3 == 0 {
                before(&target)
            } else {
                after(&target)
            };
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

/// A move answers the whole item as stored afterwards (labels in order, custom fields, parent
/// and epic included), read in the move's one statement, whatever the item carries.
#[tokio::test]
async fn a_move_returns_the_item_as_stored() {
    use ouro_plan::fields::{self, FieldType, NewField};
    for db in backends() {
        let f = fixture(&db).await;
        for (name, ty) in [("team", FieldType::Text), ("points", FieldType::Number)] {
            fields::create(
                &f.store,
                &f.project,
                &f.actor,
                NewField {
                    name: name.into(),
                    label: None,
                    field_type: ty,
                    options: vec![],
                },
            )
            .await
            .unwrap();
        }
        let epic = items::create(&f.store, &f.project, &f.actor, new("epic", "E"))
            .await
            .unwrap();
        let plain = items::create(&f.store, &f.project, &f.actor, new("task", "plain"))
            .await
            .unwrap();
        let rich = items::create(
            &f.store,
            &f.project,
            &f.actor,
            NewItem {
                // Out of order, with a quote and non-ASCII: they come back sorted and intact.
                labels: vec!["zeta".into(), "api\"v2\"".into(), "äpfel".into()],
                parent: Some(epic.key.clone()),
                fields: [
                    ("team".to_string(), serde_json::json!("core, \"web\"")),
                    ("points".to_string(), serde_json::json!(5)),
                ]
                .into(),
                ..new("feature", "rich")
            },
        )
        .await
        .unwrap();
        for (key, to) in [
            (&rich.key, before(&epic.key)),
            (&plain.key, after(&rich.key)),
            (&rich.key, after(&plain.key)),
            (&plain.key, before(&epic.key)),
        ] {
            let moved = items::move_rank(&f.store, &f.project, &f.actor, key, to)
                .await
                .unwrap();
            let stored = items::get(&mut f.store.read().await.unwrap(), f.project.id, key)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(moved, stored, "{}: {key}", db.name());
        }
        let r = items::get(&mut f.store.read().await.unwrap(), f.project.id, &rich.key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.labels.len(), 3, "{}", db.name());
        assert_eq!(r.fields.len(), 2, "{}", db.name());
        assert_eq!(r.epic.as_deref(), Some(epic.key.as_str()));
        assert_eq!(
            keys_in_order(&f).await,
            [&rich.key, &plain.key, &epic.key].map(|s| s.clone()),
            "{}",
            db.name()
        );
    }
}

/// Which key a refused move names: the moved item is looked up first, then the target; keys
/// with NUL or in other projects are simply not found.
#[tokio::test]
async fn a_refused_move_names_the_missing_item_and_writes_nothing() {
    for db in backends() {
        let f = fixture(&db).await;
        let a = items::create(&f.store, &f.project, &f.actor, new("task", "a"))
            .await
            .unwrap();
        let other = projects::create(
            &f.store,
            &ouro_store::accounts::user_by_name(&mut f.store.read().await.unwrap(), "alice")
                .await
                .unwrap()
                .unwrap(),
            "other",
            "Other",
            "",
            Visibility::Private,
        )
        .await
        .unwrap();
        let elsewhere = items::create(&f.store, &other, &f.actor, new("task", "x"))
            .await
            .unwrap();
        let seq = f.store.latest_seq_hint();
        for (key, to, missing) in [
            ("PAYAPI-99", before("PAYAPI-98"), "PAYAPI-99"),
            ("PAYAPI-99", before(&a.key), "PAYAPI-99"),
            (a.key.as_str(), after("PAYAPI-98"), "PAYAPI-98"),
            (a.key.as_str(), after("PAY\0API-1"), "PAY\0API-1"),
            ("PAY\0API-1", after(&a.key), "PAY\0API-1"),
            (
                a.key.as_str(),
                before(&elsewhere.key),
                elsewhere.key.as_str(),
            ),
        ] {
            let e = OuroError::from(
                items::move_rank(&f.store, &f.project, &f.actor, key, to)
                    .await
                    .unwrap_err(),
            );
            assert_eq!(e.code, ErrorCode::ItemNotFound, "{}: {key}", db.name());
            assert!(
                e.message.contains(&format!("{missing:?}")),
                "{}: {key}: {}",
                db.name(),
                e.message
            );
        }
        assert_eq!(f.store.latest_seq_hint(), seq, "{}: no event", db.name());
        let now = items::get(&mut f.store.read().await.unwrap(), f.project.id, &a.key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((now.version, &now.rank), (a.version, &a.rank));
    }
}

/// Bisecting the same gap again and again makes ranks longer (about one character per five
/// moves); the order stays exact and every rank stays valid and distinct.
#[tokio::test]
async fn many_moves_into_one_gap_keep_the_order() {
    for db in backends() {
        let f = fixture(&db).await;
        let mut k = Vec::new();
        for t in ["first", "p", "q", "last"] {
            k.push(
                items::create(&f.store, &f.project, &f.actor, new("task", t))
                    .await
                    .unwrap()
                    .key,
            );
        }
        let [first, p, q, last] = [0, 1, 2, 3].map(|i| k[i].clone());
        let start_len = keys_and_ranks(&f).await[0].1.len();
        // p and q take turns right after `first`: each lands between `first` and the other.
        let mut prev_rank = String::new();
        for n in 0..120 {
            let (key, other) = if n % 2 == 0 { (&p, &q) } else { (&q, &p) };
            let moved = items::move_rank(&f.store, &f.project, &f.actor, key, after(&first))
                .await
                .unwrap();
            if n > 0 {
                assert!(moved.rank < prev_rank, "{}: move {n}", db.name());
            }
            prev_rank = moved.rank.clone();
            let order = keys_and_ranks(&f).await;
            let keys: Vec<&str> = order.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(
                keys,
                [first.as_str(), key.as_str(), other.as_str(), last.as_str()],
                "{}: move {n}",
                db.name()
            );
        }
        let order = keys_and_ranks(&f).await;
        assert!(order.iter().all(|(_, r)| ouro_plan::rank::is_valid(r)));
        let longest = order.iter().map(|(_, r)| r.len()).max().unwrap_or(0);
        assert!(
            longest >= start_len + 15,
            "{}: ranks grew from {start_len} to {longest}",
            db.name()
        );
        // The grown ranks still work as bounds: `last` goes between the two long ones.
        items::move_rank(&f.store, &f.project, &f.actor, &last, before(&p))
            .await
            .unwrap();
        let keys: Vec<String> = keys_and_ranks(&f)
            .await
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        // After 120 moves q was moved last, so the order was first, q, p.
        assert_eq!(
            keys,
            [&first, &q, &last, &p].map(|s| s.clone()),
            "{}",
            db.name()
        );
    }
}

async fn keys_and_ranks(f: &Fixture) -> Vec<(String, String)> {
    list_all(f, ItemFilter::default())
        .await
        .into_iter()
        .map(|i| (i.key, i.rank))
        .collect()
}

/// A realistic mix: (A) story by alice, (B) overdue critical bug, (C) task under A in progress,
/// (D) done story due far ahead, (E) a bug whose title is an injection attempt.
async fn mix(f: &Fixture) -> [String; 5] {
    let mk = |ni: NewItem| {
        let (store, project, actor) = (f.store.clone(), f.project.clone(), f.actor.clone());
        async move {
            items::create(&store, &project, &actor, ni)
                .await
                .unwrap()
                .key
        }
    };
    let a = mk(NewItem {
        labels: vec!["Auth".into(), "ui".into()],
        assignee: Some("alice".into()),
        estimate: Some(3),
        priority: Some(items::Priority::High),
        ..new("story", "Login page")
    })
    .await;
    let b = mk(NewItem {
        labels: vec!["auth".into()],
        estimate: Some(8),
        due_at: Some("2020-01-01".into()),
        priority: Some(items::Priority::Critical),
        description: "users see a 500".into(),
        ..new("bug", "Login fails")
    })
    .await;
    let c = mk(NewItem {
        parent: Some(a.clone()),
        ..new("task", "Write docs")
    })
    .await;
    let d = mk(NewItem {
        labels: vec!["payments".into()],
        due_at: Some("2999-01-01".into()),
        estimate: Some(5),
        ..new("story", "Payment retry")
    })
    .await;
    let e = mk(new("bug", "'; DROP TABLE items; --")).await;
    items::transition(&f.store, &f.project, &f.actor, &c, "In progress", None)
        .await
        .unwrap();
    items::transition(&f.store, &f.project, &f.actor, &d, "Done", None)
        .await
        .unwrap();
    [a, b, c, d, e]
}

async fn query(f: &Fixture, q: &str) -> Result<Vec<String>, OuroError> {
    let s = Search {
        query: Some(q.into()),
        me: Some(f.actor.user_id().unwrap()),
        cursor: None,
        limit: 500,
    };
    let mut r = f.store.read().await.unwrap();
    match items::search(&mut r, f.project.id, &ItemFilter::default(), &s).await {
        Ok(p) => Ok(p.items.into_iter().map(|i| i.key).collect()),
        Err(e) => Err(OuroError::from(e)),
    }
}

#[tokio::test]
async fn the_query_language_filters_and_sorts_the_list() {
    for db in backends() {
        let f = fixture(&db).await;
        let [a, b, c, d, e] = mix(&f).await;
        let parent = format!("parent:{a}");
        let cases: Vec<(&str, Vec<&String>)> = vec![
            ("", vec![&a, &b, &c, &d, &e]),
            ("type:bug", vec![&b, &e]),
            ("TYPE:Story", vec![&a, &d]),
            (r#"state:"In progress""#, vec![&c]),
            ("-type:bug", vec![&a, &c, &d]),
            ("label:AUTH", vec![&a, &b]),
            ("-label:auth", vec![&c, &d, &e]),
            ("assignee:me", vec![&a]),
            ("assignee:none", vec![&b, &c, &d, &e]),
            ("login", vec![&a, &b]),
            ("\"a 500\"", vec![&b]),
            ("estimate:>=3 estimate:<8", vec![&a, &d]),
            ("estimate:none", vec![&c, &e]),
            ("due:overdue", vec![&b]),
            ("due:<2030-01-01", vec![&b]),
            ("category:done", vec![&d]),
            ("priority:critical", vec![&b]),
            ("priority:none", vec![&c, &d, &e]),
            (&parent, vec![&c]),
            ("sprint:current", vec![]),
            ("sprint:none type:task", vec![&c]),
            ("sort:-estimate", vec![&b, &d, &a, &c, &e]),
            ("type:story sort:title", vec![&a, &d]),
            ("sort:priority", vec![&b, &a, &c, &d, &e]),
        ];
        for (q, want) in cases {
            let got = query(&f, q).await.unwrap();
            let want: Vec<String> = want.into_iter().cloned().collect();
            assert_eq!(got, want, "{}: {q}", db.name());
        }
        // Injection attempts are values like any other: no error, no effect.
        // (Unquoted, the trailing `--` is "not containing -", which rules the title out.)
        for (q, want) in [
            ("\"'; DROP TABLE items; --\"", vec![e.clone()]),
            ("'; DROP TABLE items; --", vec![]),
            ("label:\"x' OR '1'='1\"", vec![]),
            ("state:\"Done'); DELETE FROM items; --\"", vec![]),
            ("text:\"%\"", vec![]),
            ("text:\"_\"", vec![]),
        ] {
            let got = query(&f, q).await.unwrap();
            assert_eq!(got, want, "{}: {q}", db.name());
        }
        assert_eq!(query(&f, "").await.unwrap().len(), 5);

        let err = query(&f, "type:bug statu:done").await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidItemQuery);
        let d = err.details.unwrap();
        assert_eq!(d["position"], 9);
        assert_eq!(d["reason"], "query.unknown_field");
        assert_eq!(d["caret"], "type:bug statu:done\n         ^");
        let err = query(&f, "estimate:>=x").await.unwrap_err();
        assert_eq!(err.details.unwrap()["position"], 9);

        // Explicit filters still apply, together with the query.
        let filter = ItemFilter {
            item_type: Some("bug".into()),
            ..ItemFilter::default()
        };
        let page = Search {
            query: Some("login".into()),
            limit: 50,
            ..Search::default()
        };
        let got = items::search(
            &mut f.store.read().await.unwrap(),
            f.project.id,
            &filter,
            &page,
        )
        .await
        .unwrap();
        assert_eq!(got.items.len(), 1);
        assert_eq!(got.items[0].key, b);
    }
}

#[tokio::test]
async fn pages_follow_rank_or_offset_cursors() {
    for db in backends() {
        let f = fixture(&db).await;
        let all = mix(&f).await.to_vec();
        // Move one so rank order differs from creation order.
        items::move_rank(&f.store, &f.project, &f.actor, &all[4], before(&all[0]))
            .await
            .unwrap();
        for (q, prefix) in [("", "r:"), ("sort:title", "o:"), ("sort:-rank", "o:")] {
            let whole = query(&f, q).await.unwrap();
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let filter = ItemFilter::default();
                let page = Search {
                    query: Some(q.into()).filter(|q: &String| !q.is_empty()),
                    cursor,
                    limit: 2,
                    me: None,
                };
                let p = items::search(
                    &mut f.store.read().await.unwrap(),
                    f.project.id,
                    &filter,
                    &page,
                )
                .await
                .unwrap();
                seen.extend(p.items.into_iter().map(|i| i.key));
                match p.next_cursor {
                    Some(c) => {
                        assert!(c.starts_with(prefix), "{q}: {c}");
                        cursor = Some(c);
                    }
                    None => break,
                }
            }
            assert_eq!(seen, whole, "{}: {q}", db.name());
        }
        // A cursor of the other kind, or garbage, is a 400, not a 500.
        for (q, c) in [("", "o:2"), ("sort:title", "r:1"), ("", "r:'"), ("", "x")] {
            let filter = ItemFilter::default();
            let page = Search {
                query: Some(q.into()).filter(|q: &String| !q.is_empty()),
                cursor: Some(c.into()),
                limit: 2,
                me: None,
            };
            let e = items::search(
                &mut f.store.read().await.unwrap(),
                f.project.id,
                &filter,
                &page,
            )
            .await
            .unwrap_err();
            assert_eq!(code(e), ErrorCode::InvalidQuery, "{q} {c}");
        }
    }
}

#[tokio::test]
async fn bulk_edits_are_all_or_nothing() {
    for db in backends() {
        let f = fixture(&db).await;
        let [a, b, _c, d, _e] = mix(&f).await;
        let edit = |keys: Vec<String>, set: items::BulkSet| {
            let (store, project, actor) = (f.store.clone(), f.project.clone(), f.actor.clone());
            async move {
                items::bulk_edit(&store, &project, &actor, items::BulkEdit { keys, set }).await
            }
        };
        // D is done and may only reopen to Ready: the whole request is refused.
        let set = items::BulkSet {
            state: Some("in progress".into()),
            add_labels: vec!["x".into()],
            ..items::BulkSet::default()
        };
        let err = OuroError::from(
            edit(vec![a.clone(), d.clone(), "PAYAPI-99".into()], set.clone())
                .await
                .unwrap_err(),
        );
        assert_eq!(err.code, ErrorCode::ValidationFailed);
        let details = err.details.unwrap();
        let failing: Vec<&str> = details["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["code"].as_str().unwrap())
            .collect();
        assert_eq!(failing, ["item.invalid_transition", "item.not_found"]);
        let mut r = f.store.read().await.unwrap();
        let a_now = items::get(&mut r, f.project.id, &a).await.unwrap().unwrap();
        assert_eq!((a_now.state.as_str(), a_now.version), ("New", 1));
        assert!(!a_now.labels.contains(&"x".to_string()));
        drop(r);

        let set = items::BulkSet {
            state: Some("in progress".into()),
            assignee: Some(Some("alice".into())),
            add_labels: vec!["x".into()],
            remove_labels: vec!["auth".into()],
            sprint: None,
        };
        let out = edit(vec![a.clone(), b.clone()], set).await.unwrap();
        assert_eq!(out.len(), 2);
        for i in &out {
            assert_eq!(i.state, "In progress");
            assert_eq!(i.assignee.as_deref(), Some("alice"));
            assert!(i.labels.contains(&"x".to_string()));
            assert!(!i.labels.contains(&"auth".to_string()));
        }
        let hist = items::history(&mut f.store.read().await.unwrap(), f.project.id, &b)
            .await
            .unwrap();
        let kinds: Vec<&str> = hist.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["item.created", "item.transitioned", "item.updated"]);
        let none = edit(vec![], items::BulkSet::default()).await.unwrap_err();
        assert_eq!(code(none), ErrorCode::ValidationFailed);
    }
}
