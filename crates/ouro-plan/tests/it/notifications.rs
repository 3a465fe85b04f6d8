//! The notifications consumer, driven directly with ledger events.

use ouro_core::{Actor, Role};
use ouro_plan::items::{self, ItemPatch, NewItem};
use ouro_plan::notifications::{self, Notifier};
use ouro_store::consumers::Consumer;
use ouro_store::events::{self, EventFilter, Visibility};
use ouro_store::projects::{self, Visibility as ProjectVisibility};
use ouro_store::testing::backends;
use ouro_store::{PLATFORM_MIGRATIONS, PageReq, Store};

#[tokio::test]
async fn a_mention_in_a_new_description_counts_even_after_a_quick_edit() {
    for db in backends() {
        let dir = tempfile::tempdir().unwrap();
        let url = db.fresh_url(dir.path()).await;
        let store = Store::open(&url, &[PLATFORM_MIGRATIONS, ouro_plan::MIGRATIONS].concat())
            .await
            .unwrap();
        let sys = Actor::System("test");
        let alice = ouro_store::accounts::create_user(&store, &sys, "alice", "password-123", false)
            .await
            .unwrap();
        let bob = ouro_store::accounts::create_user(&store, &sys, "bob", "password-123", false)
            .await
            .unwrap();
        let project = projects::create(&store, &alice, "m", "M", "", ProjectVisibility::Private)
            .await
            .unwrap();
        projects::set_member(&store, &alice.actor(), &project, "bob", Role::Developer)
            .await
            .unwrap();
        let input = NewItem {
            item_type: "story".into(),
            title: "Login".into(),
            description: "@bob please have a look".into(),
            ..NewItem::default()
        };
        let item = items::create(&store, &project, &alice.actor(), input)
            .await
            .unwrap();
        // Edited before the consumer sees the creation.
        let patch = ItemPatch {
            title: Some("Login page".into()),
            ..ItemPatch::default()
        };
        items::update(&store, &project, &alice.actor(), &item.key, patch)
            .await
            .unwrap();
        let all = events::list(
            &mut store.read().await.unwrap(),
            &Visibility::All,
            &EventFilter::default(),
            PageReq::new(0, Some(500)),
        )
        .await
        .unwrap();
        let created = all.items.iter().find(|e| e.kind == "item.created").unwrap();
        assert_eq!(created.payload["mentions"], serde_json::json!(["bob"]));
        // Delivered twice (at-least-once): one notification.
        for _ in 0..2 {
            Notifier.handle(&store, created).await.unwrap();
        }
        let got = notifications::list(
            &mut store.read().await.unwrap(),
            bob.id,
            false,
            PageReq::new(0, Some(50)),
        )
        .await
        .unwrap();
        let kinds: Vec<(&str, &str)> = got
            .items
            .iter()
            .map(|n| (n.kind.as_str(), n.item.as_str()))
            .collect();
        assert_eq!(kinds, [("mentioned", item.key.as_str())], "{}", db.name());
    }
}
