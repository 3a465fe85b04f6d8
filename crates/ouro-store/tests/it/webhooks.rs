//! Webhooks and their delivery log on both backends.

use ouro_core::{Actor, ErrorCode, OuroError};
use ouro_store::events::{EventFilter, Visibility};
use ouro_store::projects::Visibility as PV;
use ouro_store::testing::{backends, open_store};
use ouro_store::webhooks::{self, Attempt, DeliveryStatus, WebhookPatch};
use ouro_store::{PageReq, StoreError, accounts, projects};

fn err(e: StoreError) -> OuroError {
    OuroError::from(e)
}

fn kinds(k: &[&str]) -> Vec<String> {
    k.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn webhooks_crud_events_and_optimistic_concurrency() {
    for db in backends() {
        let env = open_store(&db).await;
        let s = &env.store;
        let alice = accounts::create_user(s, &Actor::System("test"), "alice", "password1", false)
            .await
            .unwrap();
        let p = projects::create(s, &alice, "demo", "Demo", "", PV::Private)
            .await
            .unwrap();
        let other = projects::create(s, &alice, "other", "Other", "", PV::Private)
            .await
            .unwrap();
        let a = alice.actor();

        let e = err(
            webhooks::create(s, &a, &p, "ftp://x", &kinds(&["*"]), true, "sealed")
                .await
                .unwrap_err(),
        );
        assert_eq!(
            (e.code, e.details.unwrap()["field"].as_str()),
            (ErrorCode::ValidationFailed, Some("url"))
        );
        let e = err(webhooks::create(
            s,
            &a,
            &p,
            "http://h/x",
            &kinds(&["bogus.*"]),
            true,
            "sealed",
        )
        .await
        .unwrap_err());
        assert_eq!(e.details.unwrap()["field"].as_str(), Some("kinds"));

        let url = "https://hooks.example/T000/very-secret-path?token=abc";
        let w = webhooks::create(
            s,
            &a,
            &p,
            url,
            &kinds(&["project.*", "project.*"]),
            true,
            "SEALED-TEXT",
        )
        .await
        .unwrap();
        assert_eq!(w.kinds, ["project.*"], "{}: duplicates dropped", db.name());
        assert!(w.since_seq > 0);
        let mut c = s.read().await.unwrap();
        assert_eq!(webhooks::get(&mut c, p.id, w.id).await.unwrap().unwrap(), w);
        assert!(
            webhooks::get(&mut c, other.id, w.id)
                .await
                .unwrap()
                .is_none(),
            "another project's id is not found"
        );
        assert_eq!(
            webhooks::list(&mut c, p.id, PageReq::default())
                .await
                .unwrap()
                .items,
            std::slice::from_ref(&w)
        );
        assert!(
            webhooks::list(&mut c, other.id, PageReq::default())
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert_eq!(
            webhooks::target(&mut c, w.id)
                .await
                .unwrap()
                .unwrap()
                .secret_enc,
            "SEALED-TEXT"
        );
        drop(c);

        let w2 = webhooks::update(
            s,
            &a,
            &p,
            w.id,
            Some(w.version),
            WebhookPatch {
                active: Some(false),
                secret_enc: Some("NEW-SEALED".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!((w2.active, w2.version), (false, w.version + 1));
        let e = err(webhooks::update(
            s,
            &a,
            &p,
            w.id,
            Some(w.version),
            WebhookPatch {
                active: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap_err());
        assert_eq!(e.code, ErrorCode::StaleVersion);
        assert_eq!(e.details.unwrap()["current_version"], w2.version);
        let e = err(
            webhooks::update(s, &a, &other, w.id, None, WebhookPatch::default())
                .await
                .unwrap_err(),
        );
        assert_eq!(e.code, ErrorCode::WebhookNotFound);

        // The ledger has the three changes, never the secret nor the URL's path.
        let evs = ouro_store::events::list(
            &mut s.read().await.unwrap(),
            &Visibility::All,
            &EventFilter {
                project_id: Some(p.id),
                kind: Some("webhook.*".into()),
            },
            PageReq::default(),
        )
        .await
        .unwrap()
        .items;
        webhooks::delete(s, &a, &p, w.id).await.unwrap();
        assert_eq!(
            err(webhooks::delete(s, &a, &p, w.id).await.unwrap_err()).code,
            ErrorCode::WebhookNotFound
        );
        assert_eq!(
            evs.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            ["webhook.created", "webhook.updated"]
        );
        assert_eq!(evs[0].seq, w.since_seq);
        assert_eq!(evs[0].payload["target"], "https://hooks.example");
        let all = serde_json::to_string(&evs).unwrap();
        assert!(
            !all.contains("SEALED") && !all.contains("very-secret") && !all.contains("token=abc"),
            "{all}"
        );
        assert_eq!(evs[1].payload["changes"]["secret"], "rotated");
    }
}

#[tokio::test]
async fn deliveries_enqueue_once_claim_record_page_and_redeliver() {
    for db in backends() {
        let env = open_store(&db).await;
        let s = &env.store;
        let alice = accounts::create_user(s, &Actor::System("test"), "alice", "password1", false)
            .await
            .unwrap();
        let p = projects::create(s, &alice, "demo", "Demo", "", PV::Private)
            .await
            .unwrap();
        let w = webhooks::create(
            s,
            &alice.actor(),
            &p,
            "http://127.0.0.1:1/h",
            &kinds(&["*"]),
            true,
            "x",
        )
        .await
        .unwrap();

        // Enqueuing the same event twice (a replayed event) makes one delivery.
        let mut tx = s.begin().await.unwrap();
        let d1 = webhooks::enqueue(&mut tx, w.id, 1)
            .await
            .unwrap()
            .expect("queued");
        assert_eq!(
            webhooks::enqueue(&mut tx, w.id, 1).await.unwrap(),
            None,
            "{}",
            db.name()
        );
        let d2 = webhooks::enqueue(&mut tx, w.id, 2)
            .await
            .unwrap()
            .expect("queued");
        tx.commit().await.unwrap();

        let now = ouro_core::time::now_ms() + 1;
        let claimed = webhooks::claim(s, now, 10, 60_000).await.unwrap();
        assert_eq!(claimed.iter().map(|d| d.id).collect::<Vec<_>>(), [d1, d2]);
        assert_eq!(claimed[0].event_kind.as_deref(), Some("user.created"));
        assert!(
            webhooks::claim(s, now, 10, 60_000)
                .await
                .unwrap()
                .is_empty(),
            "{}: claimed ones are leased",
            db.name()
        );
        assert_eq!(
            webhooks::next_due_at(&mut s.read().await.unwrap())
                .await
                .unwrap(),
            Some(now + 60_000)
        );

        let body = "é".repeat(5000);
        webhooks::record_attempt(
            s,
            d1,
            &Attempt {
                status: DeliveryStatus::Pending,
                attempts: 1,
                next_attempt_at: Some(now + 10),
                response_status: Some(500),
                response_body: Some(body),
                error: Some("HTTP 500".into()),
                duration_ms: Some(3),
            },
        )
        .await
        .unwrap();
        webhooks::record_attempt(
            s,
            d2,
            &Attempt {
                status: DeliveryStatus::Succeeded,
                attempts: 1,
                next_attempt_at: None,
                response_status: Some(204),
                response_body: None,
                error: None,
                duration_ms: Some(2),
            },
        )
        .await
        .unwrap();
        let mut c = s.read().await.unwrap();
        let got = webhooks::get_delivery(&mut c, w.id, d1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (got.status, got.attempts, got.response_status),
            (DeliveryStatus::Pending, 1, Some(500))
        );
        let kept = got.response_body.unwrap();
        assert!(
            kept.len() <= webhooks::MAX_RESPONSE_BODY && kept.len() > 4000,
            "{}",
            kept.len()
        );
        assert!(webhooks::due(&mut c, now, 10).await.unwrap().is_empty());
        assert_eq!(
            webhooks::due(&mut c, now + 10, 10).await.unwrap().len(),
            1,
            "the retry is due at its time"
        );
        assert!(
            webhooks::get_delivery(&mut c, w.id + 1, d1)
                .await
                .unwrap()
                .is_none()
        );
        drop(c);

        let r = webhooks::redeliver(s, w.id, d2).await.unwrap();
        assert_eq!(
            (r.redelivery_of, r.event_seq, r.status, r.attempts),
            (Some(d2), 2, DeliveryStatus::Pending, 0)
        );
        assert_eq!(
            err(webhooks::redeliver(s, w.id, 9999).await.unwrap_err()).code,
            ErrorCode::DeliveryNotFound
        );

        // Newest first, in pages.
        let mut c = s.read().await.unwrap();
        let p1 = webhooks::list_deliveries(&mut c, w.id, PageReq::new(0, Some(2)))
            .await
            .unwrap();
        assert_eq!(
            p1.items.iter().map(|d| d.id).collect::<Vec<_>>(),
            [r.id, d2]
        );
        let after = p1.next_cursor.expect("more").parse().unwrap();
        let p2 = webhooks::list_deliveries(&mut c, w.id, PageReq::new(after, Some(2)))
            .await
            .unwrap();
        assert_eq!(p2.items.iter().map(|d| d.id).collect::<Vec<_>>(), [d1]);
        assert_eq!(p2.next_cursor, None);
        drop(c);

        // An inactive webhook's deliveries wait.
        webhooks::update(
            s,
            &alice.actor(),
            &p,
            w.id,
            None,
            WebhookPatch {
                active: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let later = now + 120_000;
        assert!(
            webhooks::due(&mut s.read().await.unwrap(), later, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
