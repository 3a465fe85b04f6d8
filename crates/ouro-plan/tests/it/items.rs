use ouro_core::{Actor, ErrorCode, OuroError};
use ouro_plan::items::{self, ItemFilter, ItemPatch, NewItem};
use ouro_store::projects::{self, Project, Visibility};
use ouro_store::testing::{TestDb, backends};
use ouro_store::{PLATFORM_MIGRATIONS, PageReq, Store, StoreError};

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
