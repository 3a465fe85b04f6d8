//! In-app notifications written by the `plan-notifications` consumer: assignment, @mentions,
//! watched items' state changes and comments; reading them over the API and the UI.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

const ITEMS: &str = "/api/v1/projects/demo/items";
const NOTES: &str = "/api/v1/notifications";

/// Project `demo` with developers; returns their tokens in order.
async fn setup(s: &TestServer, devs: &[&str]) -> Vec<String> {
    let (st, body) = s
        .admin(
            Method::POST,
            "/api/v1/projects",
            Some(json!({"slug": "demo", "name": "Demo"})),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let mut toks = Vec::new();
    for name in devs {
        toks.push(s.user(name).await);
        let (st, _) = s
            .admin(
                Method::PUT,
                &format!("/api/v1/projects/demo/members/{name}"),
                Some(json!({"role": "developer"})),
            )
            .await;
        assert_eq!(st, 200);
    }
    toks
}

/// Waits until the user has `n` notifications (the consumer runs in the background) and returns
/// them, newest first.
async fn wait_for(s: &TestServer, tok: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, body) = s.call(Method::GET, NOTES, Some(tok), None).await;
        assert_eq!(st, 200, "{body}");
        let items = body["items"].as_array().unwrap().clone();
        if items.len() >= n {
            assert_eq!(items.len(), n, "more notifications than expected: {body}");
            return items;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kinds(list: &[Value]) -> Vec<(String, String)> {
    list.iter()
        .map(|n| {
            (
                n["kind"].as_str().unwrap().to_string(),
                n["item"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn count(s: &TestServer, tok: &str) -> i64 {
    let (st, body) = s
        .call(Method::GET, &format!("{NOTES}/count"), Some(tok), None)
        .await;
    assert_eq!(st, 200, "{body}");
    body["unread"].as_i64().unwrap()
}

#[tokio::test]
async fn assignment_mentions_and_watching_notify_the_right_people() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let t = setup(&s, &["alice", "bob", "carol"]).await;
        let (alice, bob, carol) = (&t[0], &t[1], &t[2]);
        // An outsider who is not a member of the project: mentions of them do nothing.
        let olly = s.user("olly").await;

        // The admin creates an item assigned to bob: bob hears, the admin (the actor) does not.
        let (st, item) = s
            .admin(
                Method::POST,
                ITEMS,
                Some(json!({"type": "story", "title": "Checkout", "assignee": "bob"})),
            )
            .await;
        assert_eq!(st, 201, "{item}");
        let got = wait_for(&s, bob, 1).await;
        assert_eq!(kinds(&got), vec![("assigned".into(), "DEMO-1".into())]);
        assert_eq!(got[0]["actor"], "user:admin");
        assert_eq!(got[0]["title"], "Checkout");
        assert_eq!(got[0]["read"], false);

        // Bob assigns an item to himself: nothing for bob. Then alice assigns him another one,
        // which shows the consumer went past the first.
        let (st, _) = s
            .call(
                Method::POST,
                ITEMS,
                Some(bob),
                Some(json!({"type": "task", "title": "Mine", "assignee": "bob"})),
            )
            .await;
        assert_eq!(st, 201);
        let (st, _) = s
            .call(
                Method::POST,
                ITEMS,
                Some(alice),
                Some(json!({"type": "task", "title": "Yours"})),
            )
            .await;
        assert_eq!(st, 201);
        let (st, body) = s
            .call(
                Method::PATCH,
                &format!("{ITEMS}/DEMO-3"),
                Some(alice),
                Some(json!({"assignee": "bob"})),
            )
            .await;
        assert_eq!(st, 200, "{body}");
        let got = wait_for(&s, bob, 2).await;
        assert_eq!(
            kinds(&got),
            vec![
                ("assigned".into(), "DEMO-3".into()),
                ("assigned".into(), "DEMO-1".into())
            ]
        );

        // Alice mentions carol (a member) and olly (not a member) in a comment on DEMO-1. The
        // admin watches DEMO-1 as its reporter, so hears of the comment; alice does not.
        let (st, c) = s
            .call(
                Method::POST,
                &format!("{ITEMS}/DEMO-1/comments"),
                Some(alice),
                Some(json!({"body": "@carol can you look? cc @olly @alice"})),
            )
            .await;
        assert_eq!(st, 201, "{c}");
        let got = wait_for(&s, carol, 1).await;
        assert_eq!(kinds(&got), vec![("mentioned".into(), "DEMO-1".into())]);
        assert_eq!(got[0]["actor"], "user:alice");
        let admin = s.admin_token.clone();
        let got = wait_for(&s, &admin, 1).await;
        assert_eq!(kinds(&got), vec![("commented".into(), "DEMO-1".into())]);

        // Carol starts watching DEMO-1; bob moves it. Watchers (admin, alice by commenting,
        // carol) hear of the state change; bob, the actor and not a watcher, does not.
        let (st, _) = s
            .call(
                Method::PUT,
                &format!("{ITEMS}/DEMO-1/watchers/me"),
                Some(carol),
                None,
            )
            .await;
        assert_eq!(st, 200);
        let (st, body) = s
            .call(
                Method::POST,
                &format!("{ITEMS}/DEMO-1/transitions"),
                Some(bob),
                Some(json!({"to": "In progress"})),
            )
            .await;
        assert_eq!(st, 200, "{body}");
        for tok in [&admin, alice, carol] {
            let got = wait_for(&s, tok, if tok == alice { 1 } else { 2 }).await;
            assert_eq!(got[0]["kind"], "state_changed", "{got:?}");
            assert_eq!(got[0]["actor"], "user:bob");
        }
        // A description that newly mentions someone notifies them too.
        let (st, body) = s
            .call(
                Method::PATCH,
                &format!("{ITEMS}/DEMO-3"),
                Some(alice),
                Some(json!({"description": "Pairing with @carol"})),
            )
            .await;
        assert_eq!(st, 200, "{body}");
        let got = wait_for(&s, carol, 3).await;
        assert_eq!(got[0]["kind"], "mentioned");
        assert_eq!(got[0]["item"], "DEMO-3");

        // So does a new item's description.
        let (st, _) = s
            .admin(
                Method::POST,
                ITEMS,
                Some(json!({"type": "bug", "title": "Crash", "description": "@carol saw this"})),
            )
            .await;
        assert_eq!(st, 201);
        let got = wait_for(&s, carol, 4).await;
        assert_eq!(
            (got[0]["kind"].as_str(), got[0]["item"].as_str()),
            (Some("mentioned"), Some("DEMO-4"))
        );

        // A redelivered event adds nothing: hand every item event to the consumer again.
        let before: Vec<usize> = {
            let mut v = Vec::new();
            for tok in [&admin, alice, bob, carol] {
                let (_, b) = s.call(Method::GET, NOTES, Some(tok), None).await;
                v.push(b["items"].as_array().unwrap().len());
            }
            v
        };
        let events = ouro_store::events::list(
            &mut s.state.store.read().await.unwrap(),
            &ouro_store::events::Visibility::All,
            &ouro_store::events::EventFilter {
                project_id: None,
                kind: Some("item.*".into()),
            },
            ouro_store::PageReq::new(0, Some(500)),
        )
        .await
        .unwrap();
        assert!(events.items.len() >= 7);
        for e in &events.items {
            use ouro_store::consumers::Consumer;
            ouro_plan::notifications::Notifier
                .handle(&s.state.store, e)
                .await
                .unwrap();
        }
        let mut after = Vec::new();
        for tok in [&admin, alice, bob, carol] {
            let (_, b) = s.call(Method::GET, NOTES, Some(tok), None).await;
            after.push(b["items"].as_array().unwrap().len());
        }
        assert_eq!(before, after);

        // Nobody heard of their own changes, and the outsider heard nothing.
        assert_eq!(wait_for(&s, bob, 2).await.len(), 2);
        assert_eq!(wait_for(&s, alice, 1).await.len(), 1);
        assert_eq!(count(&s, &olly).await, 0);
        s.stop().await;
    }
}

#[tokio::test]
async fn reading_notifications_and_the_header_count() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let t = setup(&s, &["bob", "carol"]).await;
        let (bob, carol) = (&t[0], &t[1]);
        for title in ["One", "Two", "Three"] {
            let (st, _) = s
                .admin(
                    Method::POST,
                    ITEMS,
                    Some(json!({"type": "story", "title": title, "assignee": "bob"})),
                )
                .await;
            assert_eq!(st, 201);
        }
        let got = wait_for(&s, bob, 3).await;
        assert_eq!(count(&s, bob).await, 3);
        assert_eq!(count(&s, carol).await, 0);

        // Paged newest first.
        let (st, p1) = s
            .call(Method::GET, &format!("{NOTES}?limit=2"), Some(bob), None)
            .await;
        assert_eq!(st, 200);
        assert_eq!(p1["items"].as_array().unwrap().len(), 2);
        assert_eq!(p1["items"][0]["item"], "DEMO-3");
        let cursor = p1["next_cursor"].as_str().unwrap().to_string();
        let (_, p2) = s
            .call(
                Method::GET,
                &format!("{NOTES}?limit=2&cursor={cursor}"),
                Some(bob),
                None,
            )
            .await;
        assert_eq!(p2["items"].as_array().unwrap().len(), 1);
        assert_eq!(p2["items"][0]["item"], "DEMO-1");
        assert!(p2["next_cursor"].is_null());

        // Someone else's notification is not found, and stays unread.
        let id = got[0]["id"].as_i64().unwrap();
        let (st, body) = s
            .call(
                Method::POST,
                &format!("{NOTES}/{id}/read"),
                Some(carol),
                None,
            )
            .await;
        assert_eq!(
            (st, error_code(&body)),
            (404, "notification.not_found".into())
        );
        let (st, body) = s
            .call(Method::POST, &format!("{NOTES}/abc/read"), Some(bob), None)
            .await;
        assert_eq!(st, 404, "{body}");
        assert_eq!(count(&s, bob).await, 3);

        // Bob reads one.
        let (st, _) = s
            .call(Method::POST, &format!("{NOTES}/{id}/read"), Some(bob), None)
            .await;
        assert_eq!(st, 204);
        assert_eq!(count(&s, bob).await, 2);
        let (_, unread) = s
            .call(
                Method::GET,
                &format!("{NOTES}?unread=true"),
                Some(bob),
                None,
            )
            .await;
        let ids: Vec<i64> = unread["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids.len(), 2);
        assert!(!ids.contains(&id));

        // The header of a signed-in page shows the unread count and links to the list.
        let res = s
            .req(Method::POST, "/login", None)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&[
                ("name", "bob"),
                ("password", "password-123"),
                ("next", "/projects"),
            ]))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 303);
        let cookie = res
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("; ");
        let page = |path: &'static str| {
            let r = s
                .req(Method::GET, path, None)
                .header("cookie", cookie.clone());
            async move {
                let res = r.send().await.unwrap();
                (res.status().as_u16(), res.text().await.unwrap())
            }
        };
        let (st, html) = page("/projects").await;
        assert_eq!(st, 200);
        assert!(html.contains("href=\"/notifications\""), "{html}");
        assert!(html.contains("id=\"unread-count\">2<"), "{html}");
        let (st, html) = page("/notifications").await;
        assert_eq!(st, 200);
        assert!(html.contains("/projects/demo/plan/items/DEMO-2"), "{html}");
        assert!(html.contains("assigned you DEMO-3"), "{html}");

        // The page's own forms: mark one read (a token needs no CSRF field), not someone else's.
        let other = got[1]["id"].as_i64().unwrap();
        let res = s
            .req(Method::POST, "/notifications/read", Some(carol))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&[("id", &other.to_string())]))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 404);
        let res = s
            .req(Method::POST, "/notifications/read", Some(bob))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&[("id", &other.to_string())]))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 303);
        assert_eq!(count(&s, bob).await, 1);

        // Read all: nothing unread, the header shows no count, the list still has them.
        let (st, body) = s
            .call(Method::POST, &format!("{NOTES}/read-all"), Some(bob), None)
            .await;
        assert_eq!((st, body["unread"].as_i64()), (200, Some(0)));
        assert_eq!(count(&s, bob).await, 0);
        let (_, unread) = s
            .call(
                Method::GET,
                &format!("{NOTES}?unread=true"),
                Some(bob),
                None,
            )
            .await;
        assert!(unread["items"].as_array().unwrap().is_empty());
        let (_, all) = s.call(Method::GET, NOTES, Some(bob), None).await;
        assert!(
            all["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["read"] == true)
        );
        let (_, html) = page("/projects").await;
        assert!(!html.contains("unread-count"), "{html}");

        // Signed out, the API asks for credentials.
        let (st, _) = s
            .call(Method::GET, &format!("{NOTES}/count"), None, None)
            .await;
        assert_eq!(st, 401);
        s.stop().await;
    }
}

/// Posts the public feedback form anonymously; returns status and page.
async fn feedback(s: &TestServer, slug: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let res = s
        .req(Method::POST, &format!("/p/{slug}/feedback"), None)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(fields))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn triage(s: &TestServer, tok: &str, key: &str, body: Value) -> (u16, Value) {
    let path = format!("/api/v1/projects/demo/triage/{key}");
    s.call(Method::POST, &path, Some(tok), Some(body)).await
}

async fn anon_get(s: &TestServer, path: &str) -> u16 {
    s.req(Method::GET, path, None)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn public_feedback_form_and_triage() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let t = setup(&s, &["dev"]).await;
        let dev = &t[0];
        // A private project, or a form that is switched off: 404.
        assert_eq!(anon_get(&s, "/p/demo/feedback").await, 404);
        let (st, body) = s
            .admin(
                Method::PUT,
                "/api/v1/projects/demo/intake",
                Some(json!({"public_form": true})),
            )
            .await;
        assert_eq!((st, body["public_form"].as_bool()), (200, Some(true)));
        assert_eq!(anon_get(&s, "/p/demo/feedback").await, 404, "still private");
        let (st, _) = s
            .admin(
                Method::PATCH,
                "/api/v1/projects/demo",
                Some(json!({"visibility": "public"})),
            )
            .await;
        assert_eq!(st, 200);
        assert_eq!(anon_get(&s, "/p/demo/feedback").await, 200);
        assert_eq!(anon_get(&s, "/p/nope/feedback").await, 404);
        // Only maintainers switch it.
        let (st, _) = s
            .call(
                Method::PUT,
                "/api/v1/projects/demo/intake",
                Some(dev),
                Some(json!({"public_form": false})),
            )
            .await;
        assert_eq!(st, 403);

        // A submission becomes a feedback item with no reporter and the contact in the text.
        let (st, html) = feedback(
            &s,
            "demo",
            &[
                ("title", "Export is slow"),
                ("body", "Takes a minute"),
                ("contact", "ann@example.com"),
                ("website", ""),
            ],
        )
        .await;
        assert_eq!(st, 201, "{html}");
        assert!(html.contains("feedback-sent"));
        let (_, item) = s.admin(Method::GET, &format!("{ITEMS}/DEMO-1"), None).await;
        assert_eq!(item["type"], "feedback");
        assert!(item["reporter"].is_null());
        assert!(
            item["description"]
                .as_str()
                .unwrap()
                .contains("Contact: ann@example.com"),
            "{item}"
        );
        // The honeypot: thanks, but nothing stored.
        let (st, html) = feedback(
            &s,
            "demo",
            &[("title", "Buy now"), ("website", "spam.example")],
        )
        .await;
        assert_eq!(st, 200);
        assert!(html.contains("feedback-sent"));
        // Bad input is the form again with a 422.
        let long = "x".repeat(201);
        let (st, html) = feedback(&s, "demo", &[("title", &long)]).await;
        assert_eq!(st, 422, "{html}");
        let (st, _) = feedback(&s, "demo", &[("title", "Hi"), ("contact", "not-an-email")]).await;
        assert_eq!(st, 422);
        let (_, page) = s.admin(Method::GET, ITEMS, None).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");

        // More submissions, then the address is throttled.
        for i in 2..=5 {
            let (st, _) = feedback(&s, "demo", &[("title", &format!("Idea {i}"))]).await;
            assert_eq!(st, 201);
        }
        let (st, _) = feedback(&s, "demo", &[("title", "One too many")]).await;
        assert_eq!(st, 429);

        // An incident and a story: the incident waits for triage too, the story does not.
        for (ty, title) in [("incident", "Site down"), ("story", "Checkout")] {
            let (st, _) = s
                .admin(
                    Method::POST,
                    ITEMS,
                    Some(json!({"type": ty, "title": title})),
                )
                .await;
            assert_eq!(st, 201);
        }
        let (st, queue) = s
            .call(Method::GET, "/api/v1/projects/demo/triage", Some(dev), None)
            .await;
        assert_eq!(st, 200);
        let keys: Vec<&str> = queue
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["key"].as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            ["DEMO-1", "DEMO-2", "DEMO-3", "DEMO-4", "DEMO-5", "DEMO-6"]
        );

        // Accept the incident as a bug: other workflow, so it moves to the bug's first state.
        let (st, bug) = triage(
            &s,
            dev,
            "DEMO-6",
            json!({"action": "accept", "type": "bug"}),
        )
        .await;
        assert_eq!(st, 200, "{bug}");
        assert_eq!(
            (bug["type"].as_str(), bug["state"].as_str()),
            (Some("bug"), Some("New"))
        );
        // Accept feedback as a story (same workflow: the state stays).
        let (st, story) = triage(
            &s,
            dev,
            "DEMO-1",
            json!({"action": "accept", "type": "story"}),
        )
        .await;
        assert_eq!(st, 200, "{story}");
        assert_eq!(story["type"], "story");
        // Merge into the story: comment, duplicates link, closed.
        let (st, merged) = triage(
            &s,
            dev,
            "DEMO-2",
            json!({"action": "merge", "into": "DEMO-7"}),
        )
        .await;
        assert_eq!(st, 200, "{merged}");
        assert_eq!(merged["state_category"], "done");
        let (_, links) = s
            .admin(Method::GET, &format!("{ITEMS}/DEMO-2/links"), None)
            .await;
        assert_eq!(links["items"][0]["key"], "DEMO-7", "{links}");
        let (_, comments) = s
            .admin(Method::GET, &format!("{ITEMS}/DEMO-2/comments"), None)
            .await;
        assert!(
            comments.to_string().contains("Duplicate of DEMO-7"),
            "{comments}"
        );
        // Decline with a reason.
        let (st, declined) = triage(
            &s,
            dev,
            "DEMO-3",
            json!({"action": "decline", "reason": "Out of scope"}),
        )
        .await;
        assert_eq!(st, 200, "{declined}");
        assert_eq!(declined["state_category"], "done");
        // Bad input, and items that are not waiting.
        let (st, _) = triage(
            &s,
            dev,
            "DEMO-4",
            json!({"action": "accept", "type": "epic"}),
        )
        .await;
        assert_eq!(st, 422);
        let (st, _) = triage(
            &s,
            dev,
            "DEMO-4",
            json!({"action": "merge", "into": "DEMO-99"}),
        )
        .await;
        assert_eq!(st, 422);
        let (st, _) = triage(&s, dev, "DEMO-4", json!({"action": "explode"})).await;
        assert_eq!(st, 422);
        // A decision is all or nothing: DEMO-4 already duplicates DEMO-7, so the merge fails at
        // its link step, after its comment, and leaves neither a comment nor a triage behind.
        let (st, _) = s
            .admin(
                Method::POST,
                &format!("{ITEMS}/DEMO-4/links"),
                Some(json!({"kind": "duplicates", "target": "DEMO-7"})),
            )
            .await;
        assert_eq!(st, 201);
        let (st, body) = triage(
            &s,
            dev,
            "DEMO-4",
            json!({"action": "merge", "into": "DEMO-7"}),
        )
        .await;
        assert_eq!(
            (st, error_code(&body)),
            (409, "item.link_exists".into()),
            "{body}"
        );
        let (_, comments) = s
            .admin(Method::GET, &format!("{ITEMS}/DEMO-4/comments"), None)
            .await;
        assert_eq!(
            comments["items"],
            json!([]),
            "no half-made decision: {comments}"
        );
        let (_, four) = s.admin(Method::GET, &format!("{ITEMS}/DEMO-4"), None).await;
        assert_ne!(four["state_category"], "done", "{four}");
        let (st, body) = triage(
            &s,
            dev,
            "DEMO-7",
            json!({"action": "decline", "reason": "x"}),
        )
        .await;
        assert_eq!((st, error_code(&body)), (409, "triage.not_pending".into()));
        let (st, body) = triage(
            &s,
            dev,
            "DEMO-1",
            json!({"action": "decline", "reason": "x"}),
        )
        .await;
        assert_eq!((st, error_code(&body)), (409, "triage.not_pending".into()));
        let (_, queue) = s
            .call(Method::GET, "/api/v1/projects/demo/triage", Some(dev), None)
            .await;
        let keys: Vec<&str> = queue
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["DEMO-4", "DEMO-5"]);
        // Each decision is an item.triaged event.
        let (_, events) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/events?kind=item.triaged",
                None,
            )
            .await;
        assert_eq!(events["items"].as_array().unwrap().len(), 4, "{events}");

        // The triage page shows the queue and the switch; posting the switch closes the form.
        let res = s
            .req(
                Method::GET,
                "/projects/demo/plan/triage",
                Some(&s.admin_token),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        let html = res.text().await.unwrap();
        assert!(
            html.contains("triage-DEMO-4") && !html.contains("triage-DEMO-1\""),
            "{html}"
        );
        assert!(
            html.contains("name=\"public_form\" value=\"on\" checked"),
            "{html}"
        );
        let res = s
            .req(
                Method::POST,
                "/projects/demo/plan/triage/settings",
                Some(&s.admin_token),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .body("")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 303);
        assert_eq!(anon_get(&s, "/p/demo/feedback").await, 404);
        s.stop().await;
    }
}
