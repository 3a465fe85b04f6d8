use std::time::Duration;

use crate::support::*;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn events_list_filters_and_hides_other_projects() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let bob = s.user("bob").await;
        s.admin(
            Method::POST,
            "/api/v1/projects",
            Some(json!({"slug": "a", "name": "A"})),
        )
        .await;
        s.call(
            Method::POST,
            "/api/v1/projects",
            Some(&bob),
            Some(json!({"slug": "b", "name": "B"})),
        )
        .await;
        s.call(
            Method::PATCH,
            "/api/v1/projects/b",
            Some(&bob),
            Some(json!({"name": "B2"})),
        )
        .await;

        let (st, all) = s
            .call(Method::GET, "/api/v1/events?limit=500", Some(&bob), None)
            .await;
        assert_eq!(st, 200);
        let items = all["items"].as_array().unwrap();
        assert!(
            items.iter().all(|e| e["project"] == "b"),
            "bob sees only his project: {all}"
        );
        let kinds: Vec<&str> = items.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["project.created", "member.added", "project.updated"]
        );
        let upd = &items[2];
        assert_eq!(upd["actor"], "user:bob");
        assert_eq!(upd["subject"]["type"], "project");
        assert_eq!(
            upd["payload"]["changes"]["name"],
            json!({"old": "B", "new": "B2"})
        );
        assert_eq!(upd["schema_version"], 1);

        let (_, admin_all) = s
            .admin(Method::GET, "/api/v1/events?kind=project.*", None)
            .await;
        assert_eq!(admin_all["items"].as_array().unwrap().len(), 3);
        let first = admin_all["items"][0]["seq"].as_i64().unwrap();
        let (_, after) = s
            .admin(
                Method::GET,
                &format!("/api/v1/events?kind=project.*&after={first}"),
                None,
            )
            .await;
        assert_eq!(after["items"].as_array().unwrap().len(), 2);
        assert_eq!(
            s.call(Method::GET, "/api/v1/events?project=a", Some(&bob), None)
                .await
                .0,
            404
        );
        let (st, pe) = s
            .call(Method::GET, "/api/v1/projects/b/events", Some(&bob), None)
            .await;
        assert_eq!((st, pe["items"].as_array().unwrap().len()), (200, 3));
        let (st, body) = s
            .admin(Method::GET, "/api/v1/events?kind=DROP%20TABLE", None)
            .await;
        assert_eq!(
            (st, error_code(&body).as_str()),
            (400, "request.invalid_query")
        );
        let (st, kinds) = s.call(Method::GET, "/api/v1/event-kinds", None, None).await;
        assert_eq!(st, 200);
        assert!(
            kinds
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["name"] == "deploy.rolled_back" && k["phase"] == "deploy")
        );
        s.stop().await;
    }
}

/// Reads SSE frames until `n` events arrived; returns their (id, data).
async fn read_events(resp: reqwest::Response, n: usize) -> Vec<(i64, Value)> {
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("events arrive in time")
            .unwrap()
            .unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let (mut id, mut data) = (None, None);
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                }
                if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).ok();
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                out.push((id, data));
            }
        }
    }
    out
}

#[tokio::test]
async fn live_stream_delivers_new_events_and_resumes_from_last_event_id() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let stream = |last: Option<i64>| {
            let mut r = s.req(
                Method::GET,
                "/api/v1/events/stream?kind=project.*",
                Some(&s.admin_token),
            );
            if let Some(l) = last {
                r = r.header("last-event-id", l.to_string());
            }
            r.send()
        };
        let resp = stream(None).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        // The stream starts at "now": it gets the project created after connecting.
        let reader = tokio::spawn(read_events(resp, 1));
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.admin(
            Method::POST,
            "/api/v1/projects",
            Some(json!({"slug": "one", "name": "One"})),
        )
        .await;
        let got = reader.await.unwrap();
        assert_eq!(got[0].1["kind"], "project.created");
        assert_eq!(got[0].1["project"], "one");
        let last = got[0].0;

        // While disconnected, two more changes happen; a reconnect with Last-Event-ID gets exactly those.
        s.admin(
            Method::POST,
            "/api/v1/projects",
            Some(json!({"slug": "two", "name": "Two"})),
        )
        .await;
        s.admin(
            Method::PATCH,
            "/api/v1/projects/one",
            Some(json!({"name": "Uno"})),
        )
        .await;
        let got = read_events(stream(Some(last)).await.unwrap(), 2).await;
        assert_eq!(
            got.iter()
                .map(|(_, e)| e["kind"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["project.created", "project.updated"]
        );
        assert!(got[0].0 > last && got[1].0 > got[0].0);
        assert_eq!(
            s.call(Method::GET, "/api/v1/events/stream", None, None)
                .await
                .0,
            401
        );

        // A non-admin's stream includes projects created after it connected, and only those
        // the user can see.
        let bob = s.user("bob").await;
        let resp = s
            .req(
                Method::GET,
                "/api/v1/events/stream?kind=project.*",
                Some(&bob),
            )
            .send()
            .await
            .unwrap();
        let reader = tokio::spawn(read_events(resp, 1));
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.admin(
            Method::POST,
            "/api/v1/projects",
            Some(json!({"slug": "hidden", "name": "Hidden"})),
        )
        .await;
        s.call(
            Method::POST,
            "/api/v1/projects",
            Some(&bob),
            Some(json!({"slug": "bobs", "name": "B"})),
        )
        .await;
        let got = reader.await.unwrap();
        assert_eq!(got[0].1["project"], "bobs");
        // Shutdown ends open streams instead of hanging.
        let open = stream(Some(0)).await.unwrap();
        let t = tokio::time::Instant::now();
        s.stop().await;
        drop(open);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "shutdown waited {:?}",
            t.elapsed()
        );
    }
}
