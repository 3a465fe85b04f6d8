//! Outgoing webhooks end to end: a real receiver on 127.0.0.1 records what Ouro sends.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::*;

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Hit {
    headers: HeaderMap,
    body: Bytes,
}

impl Hit {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Shared {
    hits: Mutex<Vec<Hit>>,
    fail_first: AtomicUsize,
    always_fail: AtomicBool,
}

/// A webhook receiver: records every request; answers 500 to the first `fail_first` ones and
/// 503 to all while `always_fail` is set, else 200.
struct Receiver {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

async fn receive(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    s.hits.lock().unwrap().push(Hit { headers, body });
    if s.always_fail.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance");
    }
    if s.fail_first.load(Ordering::SeqCst) > 0 {
        s.fail_first.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::INTERNAL_SERVER_ERROR, "try again");
    }
    (StatusCode::OK, "thanks")
}

impl Receiver {
    async fn start() -> Receiver {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, shared, task }
    }

    fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `f` until it returns `Some`, for up to 10 s.
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn hits_at_least(rx: &Receiver, n: usize) -> Vec<Hit> {
    eventually(&format!("{n} requests at the receiver"), async || {
        Some(rx.hits()).filter(|h| h.len() >= n)
    })
    .await
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The value of `ouro_webhook_deliveries_total{outcome="..."}` in `/metrics`.
async fn attempts_counted(s: &TestServer, outcome: &str) -> f64 {
    let text = s
        .req(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("ouro_webhook_deliveries_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {text}"))
}

async fn project(s: &TestServer, slug: &str) {
    let (st, b) = s
        .admin(
            Method::POST,
            "/api/v1/projects",
            Some(json!({"slug": slug, "name": slug})),
        )
        .await;
    assert_eq!(st, 201, "{b}");
}

async fn touch(s: &TestServer, slug: &str, description: &str) {
    let (st, b) = s
        .admin(
            Method::PATCH,
            &format!("/api/v1/projects/{slug}"),
            Some(json!({"description": description})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
}

/// Creates a webhook as the admin; returns (id, secret).
async fn hook(s: &TestServer, slug: &str, body: Value) -> (i64, String) {
    let (st, b) = s
        .admin(
            Method::POST,
            &format!("/api/v1/projects/{slug}/webhooks"),
            Some(body),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    (
        b["id"].as_i64().unwrap(),
        b["secret"].as_str().unwrap().to_string(),
    )
}

async fn deliveries(s: &TestServer, slug: &str, id: i64) -> Vec<Value> {
    let (st, b) = s
        .admin(
            Method::GET,
            &format!("/api/v1/projects/{slug}/webhooks/{id}/deliveries"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{b}");
    b["items"].as_array().unwrap().clone()
}

/// Polls the delivery log of webhook `id` (newest first) until `f` accepts it.
async fn log_until(
    s: &TestServer,
    slug: &str,
    id: i64,
    what: &str,
    f: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    eventually(what, async || {
        Some(deliveries(s, slug, id).await).filter(|l| f(l))
    })
    .await
}

#[tokio::test]
async fn a_project_event_reaches_the_receiver_signed_with_the_right_headers() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let rx = Receiver::start().await;
        project(&s, "demo").await;
        let (id, secret) = hook(&s, "demo", json!({"url": rx.url, "kinds": ["*"]})).await;
        assert!(
            secret.starts_with("whsec_") && secret.len() > 40,
            "a strong secret is generated"
        );

        touch(&s, "demo", "first change").await;
        let hit = hits_at_least(&rx, 1).await.remove(0);
        let body = hit.json();
        assert_eq!(
            hit.header("x-ouro-event"),
            "project.updated",
            "{}: the webhook's own creation is not sent",
            db.name()
        );
        assert_eq!(body["kind"], "project.updated");
        assert_eq!(body["project"], "demo");
        assert_eq!(
            body["payload"]["changes"]["description"]["new"],
            "first change"
        );
        assert_eq!(hit.header("content-type"), "application/json");
        assert!(
            hit.header("user-agent").starts_with("Ouro-Webhook/"),
            "{}",
            hit.header("user-agent")
        );
        assert_eq!(hit.header("x-ouro-seq"), body["seq"].to_string());
        assert_eq!(
            hit.header("x-ouro-signature"),
            sign(&secret, &hit.body),
            "{}: the HMAC verifies",
            db.name()
        );

        // The body is the event exactly as the events API serves it.
        let (_, events) = s
            .admin(Method::GET, "/api/v1/events?kind=project.updated", None)
            .await;
        assert_eq!(events["items"][0], body);

        // The delivery log shows the success, and the delivery by the id in the header.
        let log = log_until(&s, "demo", id, "a succeeded delivery", |l| {
            l.first().is_some_and(|d| d["status"] == "succeeded")
        })
        .await;
        assert_eq!(log.len(), 1);
        let d = &log[0];
        assert_eq!(
            (d["attempts"].as_i64(), d["response_status"].as_i64()),
            (Some(1), Some(200))
        );
        assert_eq!(
            (d["event_kind"].as_str(), d["response_body"].as_str()),
            (Some("project.updated"), Some("thanks"))
        );
        assert_eq!(d["id"].to_string(), hit.header("x-ouro-delivery"));
        let (st, one) = s
            .admin(
                Method::GET,
                &format!("/api/v1/projects/demo/webhooks/{id}/deliveries/{}", d["id"]),
                None,
            )
            .await;
        assert_eq!((st, &one), (200, d));

        // A rotated secret signs the next delivery.
        let (st, _) = s
            .admin(
                Method::PATCH,
                &format!("/api/v1/projects/demo/webhooks/{id}"),
                Some(json!({"secret": "rotated-secret-123"})),
            )
            .await;
        assert_eq!(st, 200);
        touch(&s, "demo", "second change").await;
        let hits = eventually("the delivery after rotation", async || {
            Some(rx.hits()).filter(|h| {
                h.iter().any(|h| {
                    h.json()["payload"]["changes"]["description"]["new"] == "second change"
                })
            })
        })
        .await;
        let last = hits
            .iter()
            .find(|h| h.json()["payload"]["changes"]["description"]["new"] == "second change")
            .unwrap();
        assert_eq!(
            last.header("x-ouro-signature"),
            sign("rotated-secret-123", &last.body)
        );

        // Three deliveries: the first change, the rotation itself (webhook.updated), the second change.
        let log = log_until(&s, "demo", id, "all deliveries to succeed", |l| {
            l.len() == 3 && l.iter().all(|d| d["status"] == "succeeded")
        })
        .await;
        assert_eq!(log[1]["event_kind"], "webhook.updated");
        assert_eq!(attempts_counted(&s, "success").await, 3.0, "{}", db.name());
        assert_eq!(attempts_counted(&s, "failure").await, 0.0, "{}", db.name());
        s.stop().await;
    }
}

#[tokio::test]
async fn kind_patterns_and_the_active_flag_filter_what_is_sent() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let (members, updates, off) = (
            Receiver::start().await,
            Receiver::start().await,
            Receiver::start().await,
        );
        project(&s, "demo").await;
        project(&s, "other").await;
        s.user("bob").await;
        hook(
            &s,
            "demo",
            json!({"url": members.url, "kinds": ["member.*"]}),
        )
        .await;
        hook(
            &s,
            "demo",
            json!({"url": updates.url, "kinds": ["project.updated"]}),
        )
        .await;
        hook(
            &s,
            "demo",
            json!({"url": off.url, "kinds": ["*"], "active": false}),
        )
        .await;

        touch(&s, "other", "another project's event").await;
        touch(&s, "demo", "x").await;
        let (st, _) = s
            .admin(
                Method::PUT,
                "/api/v1/projects/demo/members/bob",
                Some(json!({"role": "developer"})),
            )
            .await;
        assert_eq!(st, 200);

        let m = hits_at_least(&members, 1).await;
        let u = hits_at_least(&updates, 1).await;
        // Give a wrongly matching delivery time to show up before checking there is none.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(members.hits().len(), 1, "{}", db.name());
        assert_eq!(updates.hits().len(), 1, "{}", db.name());
        assert_eq!(m[0].header("x-ouro-event"), "member.added");
        assert_eq!(u[0].header("x-ouro-event"), "project.updated");
        assert_eq!(
            u[0].json()["project"],
            "demo",
            "{}: other projects' events are not sent",
            db.name()
        );
        assert!(
            off.hits().is_empty(),
            "{}: an inactive webhook gets nothing",
            db.name()
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn a_failing_receiver_gets_the_delivery_retried_until_it_succeeds() {
    for db in backends() {
        let s = TestServer::start_with(
            &db,
            Options {
                tweak: |s| {
                    s.webhook_retry_base_ms = 50;
                },
                ..Default::default()
            },
        )
        .await;
        let rx = Receiver::start().await;
        rx.shared.fail_first.store(2, Ordering::SeqCst);
        project(&s, "demo").await;
        let (id, _) = hook(&s, "demo", json!({"url": rx.url, "kinds": ["project.*"]})).await;
        touch(&s, "demo", "retry me").await;

        let log = log_until(&s, "demo", id, "the third attempt to succeed", |l| {
            l.first().is_some_and(|d| d["status"] == "succeeded")
        })
        .await;
        assert_eq!(log.len(), 1, "{}: retries reuse the delivery", db.name());
        assert_eq!(
            (
                log[0]["attempts"].as_i64(),
                log[0]["response_status"].as_i64()
            ),
            (Some(3), Some(200))
        );
        assert!(
            log[0]["error"].is_null(),
            "the last attempt's outcome is shown"
        );
        let hits = rx.hits();
        assert_eq!(hits.len(), 3, "{}", db.name());
        assert!(hits.iter().all(|h| h.body == hits[0].body
            && h.header("x-ouro-delivery") == hits[0].header("x-ouro-delivery")));
        assert_eq!(attempts_counted(&s, "failure").await, 2.0, "{}", db.name());
        assert_eq!(attempts_counted(&s, "success").await, 1.0, "{}", db.name());
        s.stop().await;
    }
}

#[tokio::test]
async fn a_delivery_that_always_fails_ends_failed_and_redelivery_sends_it_again() {
    for db in backends() {
        let s = TestServer::start_with(
            &db,
            Options {
                tweak: |s| {
                    s.webhook_retry_base_ms = 50;
                    s.webhook_max_attempts = 3;
                },
                ..Default::default()
            },
        )
        .await;
        let rx = Receiver::start().await;
        rx.shared.always_fail.store(true, Ordering::SeqCst);
        project(&s, "demo").await;
        let (id, _) = hook(
            &s,
            "demo",
            json!({"url": rx.url, "kinds": ["project.updated"]}),
        )
        .await;
        touch(&s, "demo", "doomed").await;

        let log = log_until(&s, "demo", id, "the delivery to fail", |l| {
            l.first().is_some_and(|d| d["status"] == "failed")
        })
        .await;
        let failed = log[0].clone();
        assert_eq!(
            (
                failed["attempts"].as_i64(),
                failed["response_status"].as_i64()
            ),
            (Some(3), Some(503)),
            "{}",
            db.name()
        );
        assert!(
            failed["error"].as_str().unwrap().contains("503"),
            "{failed}"
        );
        assert_eq!(failed["response_body"], "down for maintenance");
        assert!(failed["next_attempt_at"].is_null());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            rx.hits().len(),
            3,
            "{}: no attempt after the last",
            db.name()
        );

        // The receiver is fixed; a manual redelivery sends the same event as a new delivery.
        rx.shared.always_fail.store(false, Ordering::SeqCst);
        let path = format!(
            "/api/v1/projects/demo/webhooks/{id}/deliveries/{}/redeliver",
            failed["id"]
        );
        let (st, again) = s.admin(Method::POST, &path, None).await;
        assert_eq!(st, 201, "{again}");
        assert_eq!(
            (again["redelivery_of"].clone(), again["event_seq"].clone()),
            (failed["id"].clone(), failed["event_seq"].clone())
        );
        let log = log_until(&s, "demo", id, "the redelivery to succeed", |l| {
            l.first().is_some_and(|d| d["status"] == "succeeded")
        })
        .await;
        assert_eq!(log.len(), 2);
        assert_eq!(
            (log[0]["id"].clone(), log[1]["status"].clone()),
            (again["id"].clone(), json!("failed"))
        );
        let hits = rx.hits();
        assert_eq!(hits.len(), 4);
        assert_eq!(hits[3].header("x-ouro-delivery"), again["id"].to_string());
        assert_eq!(hits[3].body, hits[0].body, "the same event");

        // A receiver that is not listening: a network error, recorded as such.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (nid, _) = hook(
            &s,
            "demo",
            json!({"url": format!("http://{closed}/x"), "kinds": ["project.updated"]}),
        )
        .await;
        touch(&s, "demo", "nobody listens").await;
        let log = log_until(&s, "demo", nid, "the unreachable delivery to fail", |l| {
            l.first().is_some_and(|d| d["status"] == "failed")
        })
        .await;
        assert!(log[0]["response_status"].is_null());
        assert!(
            log[0]["error"].as_str().unwrap().contains("cannot connect"),
            "{}",
            log[0]
        );

        // Unknown deliveries and malformed ids are refused with the error shape.
        let (st, b) = s
            .admin(
                Method::POST,
                &format!("/api/v1/projects/demo/webhooks/{id}/deliveries/99999/redeliver"),
                None,
            )
            .await;
        assert_eq!(
            (st, error_code(&b).as_str()),
            (404, "webhook.delivery_not_found")
        );
        let (st, b) = s
            .admin(
                Method::GET,
                &format!("/api/v1/projects/demo/webhooks/{id}/deliveries/nope"),
                None,
            )
            .await;
        assert_eq!((st, error_code(&b).as_str()), (400, "request.invalid_path"));
        s.stop().await;
    }
}

#[tokio::test]
async fn webhooks_are_for_maintainers_and_stay_inside_their_project() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let rx = Receiver::start().await;
        project(&s, "demo").await;
        project(&s, "other").await;
        let bob = s.user("bob").await;
        let carol = s.user("carol").await;
        let (st, _) = s
            .admin(
                Method::PUT,
                "/api/v1/projects/demo/members/bob",
                Some(json!({"role": "developer"})),
            )
            .await;
        assert_eq!(st, 200);
        let (id, _) = hook(&s, "demo", json!({"url": rx.url})).await;
        touch(&s, "demo", "d").await;
        let did = log_until(&s, "demo", id, "a delivery", |l| !l.is_empty()).await[0]["id"].clone();

        let base = "/api/v1/projects/demo/webhooks";
        let routes = [
            (Method::GET, base.to_string(), None),
            (Method::POST, base.to_string(), Some(json!({"url": rx.url}))),
            (Method::GET, format!("{base}/{id}"), None),
            (
                Method::PATCH,
                format!("{base}/{id}"),
                Some(json!({"active": false})),
            ),
            (Method::DELETE, format!("{base}/{id}"), None),
            (Method::GET, format!("{base}/{id}/deliveries"), None),
            (Method::GET, format!("{base}/{id}/deliveries/{did}"), None),
            (
                Method::POST,
                format!("{base}/{id}/deliveries/{did}/redeliver"),
                None,
            ),
        ];
        for (m, path, body) in routes {
            let (st, b) = s.call(m.clone(), &path, Some(&bob), body.clone()).await;
            assert_eq!(
                (st, error_code(&b).as_str()),
                (403, "auth.forbidden"),
                "{} developer {m} {path}",
                db.name()
            );
            let (st, b) = s.call(m.clone(), &path, Some(&carol), body.clone()).await;
            assert_eq!(
                (st, error_code(&b).as_str()),
                (404, "project.not_found"),
                "{} non-member {m} {path}",
                db.name()
            );
            let (st, b) = s.call(m.clone(), &path, None, body).await;
            assert_eq!(
                (st, error_code(&b).as_str()),
                (401, "auth.required"),
                "{} anonymous {m} {path}",
                db.name()
            );
        }
        let page = s
            .req(Method::GET, "/projects/demo/webhooks", Some(&bob))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 403, "the web page is for maintainers too");

        // A webhook id of another project is not found there, whatever the caller's rights.
        for path in [
            format!("/api/v1/projects/other/webhooks/{id}"),
            format!("/api/v1/projects/other/webhooks/{id}/deliveries"),
            format!("/api/v1/projects/other/webhooks/{id}/deliveries/{did}"),
        ] {
            let (st, b) = s.admin(Method::GET, &path, None).await;
            assert_eq!(
                (st, error_code(&b).as_str()),
                (404, "webhook.not_found"),
                "{path}"
            );
        }
        let (st, b) = s
            .admin(
                Method::DELETE,
                &format!("/api/v1/projects/other/webhooks/{id}"),
                None,
            )
            .await;
        assert_eq!((st, error_code(&b).as_str()), (404, "webhook.not_found"));
        let (st, _) = s.admin(Method::GET, &format!("{base}/{id}"), None).await;
        assert_eq!(st, 200, "still there");

        // Bad input: the error shape, never a 500.
        let bad = [
            (json!({"url": "ftp://x"}), 422, "request.validation_failed"),
            (
                json!({"url": "http://h/x", "kinds": []}),
                422,
                "request.validation_failed",
            ),
            (
                json!({"url": "http://h/x", "kinds": ["nope.*"]}),
                422,
                "request.validation_failed",
            ),
            (
                json!({"url": "http://h/x", "secret": "short"}),
                422,
                "request.validation_failed",
            ),
            (
                json!({"url": "http://h/x", "extra": 1}),
                422,
                "request.invalid_body",
            ),
            (
                json!({"url": format!("http://h/{}", "a".repeat(2100))}),
                422,
                "request.validation_failed",
            ),
            (json!({"kinds": ["*"]}), 422, "request.invalid_body"),
        ];
        for (body, status, code) in bad {
            let (st, b) = s.admin(Method::POST, base, Some(body.clone())).await;
            assert_eq!((st, error_code(&b).as_str()), (status, code), "{body}");
        }
        let (st, b) = s.admin(Method::GET, &format!("{base}/abc"), None).await;
        assert_eq!((st, error_code(&b).as_str()), (400, "request.invalid_path"));

        // Optimistic concurrency.
        let (_, cur) = s.admin(Method::GET, &format!("{base}/{id}"), None).await;
        let v = cur["version"].as_i64().unwrap();
        let (st, _) = s
            .admin(
                Method::PATCH,
                &format!("{base}/{id}"),
                Some(json!({"kinds": ["project.*"], "version": v})),
            )
            .await;
        assert_eq!(st, 200);
        let (st, b) = s
            .admin(
                Method::PATCH,
                &format!("{base}/{id}"),
                Some(json!({"active": false, "version": v})),
            )
            .await;
        assert_eq!(
            (st, error_code(&b).as_str()),
            (409, "conflict.stale_version")
        );
        assert_eq!(b["error"]["details"]["current_version"], v + 1);
        s.stop().await;
    }
}

#[tokio::test]
async fn the_secret_is_never_returned_and_is_stored_encrypted() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        project(&s, "demo").await;
        let secret = "my-own-signing-secret-42";
        let (id, echoed) = hook(
            &s,
            "demo",
            json!({"url": "https://hooks.example/T1/path-token", "secret": secret}),
        )
        .await;
        assert_eq!(echoed, secret, "create answers with the secret once");

        let (_, list) = s
            .admin(Method::GET, "/api/v1/projects/demo/webhooks", None)
            .await;
        let (_, one) = s
            .admin(
                Method::GET,
                &format!("/api/v1/projects/demo/webhooks/{id}"),
                None,
            )
            .await;
        let (_, patched) = s
            .admin(
                Method::PATCH,
                &format!("/api/v1/projects/demo/webhooks/{id}"),
                Some(json!({"active": true})),
            )
            .await;
        assert_eq!(list["items"][0]["kinds"], json!(["*"]));
        for body in [&list["items"][0], &one, &patched] {
            assert!(
                body.get("secret").is_none() && body.get("secret_enc").is_none(),
                "{body}"
            );
            assert!(!body.to_string().contains(secret));
        }
        let (_, events) = s
            .admin(Method::GET, "/api/v1/events?kind=webhook.*", None)
            .await;
        let text = events.to_string();
        assert!(
            text.contains("webhook.created")
                && !text.contains(secret)
                && !text.contains("path-token"),
            "{text}"
        );

        let row = ouro_store::q("SELECT secret_enc FROM webhooks WHERE id = $1")
            .bind(id)
            .fetch_one(&mut s.state.store.read().await.unwrap())
            .await
            .unwrap();
        let stored = row.text("secret_enc").unwrap();
        assert!(
            !stored.contains(secret) && stored.starts_with("v1:"),
            "{}: {stored}",
            db.name()
        );
        assert_eq!(
            s.state.secrets.open(&stored).as_deref(),
            Some(secret),
            "sealed with the instance key"
        );
        s.stop().await;
    }
}

async fn post_form(s: &TestServer, path: &str, body: String) -> (u16, String, String) {
    s.admin_form(path, body).await
}

async fn page(s: &TestServer, path: &str) -> (u16, String) {
    s.admin_page(path).await
}

#[tokio::test]
async fn the_web_pages_add_show_redeliver_and_delete() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let rx = Receiver::start().await;
        project(&s, "demo").await;
        let (st, html) = page(&s, "/projects/demo/webhooks").await;
        assert_eq!(st, 200);
        assert!(
            html.contains("No webhooks yet") && html.contains("Add webhook"),
            "{html}"
        );

        let (st, _, html) = post_form(
            &s,
            "/projects/demo/webhooks",
            form_body(&[("url", "nope"), ("kinds", "*")]),
        )
        .await;
        assert_eq!(st, 422);
        assert!(
            html.contains("invalid webhook URL"),
            "the form explains the problem"
        );

        let (st, _, html) = post_form(
            &s,
            "/projects/demo/webhooks",
            form_body(&[("url", &rx.url), ("kinds", "project.*, member.*")]),
        )
        .await;
        assert_eq!(st, 201, "{html}");
        assert!(
            html.contains("whsec_") && html.contains("shown only this once"),
            "the secret is shown once"
        );
        let (_, list) = s
            .admin(Method::GET, "/api/v1/projects/demo/webhooks", None)
            .await;
        let id = list["items"][0]["id"].as_i64().unwrap();
        assert_eq!(list["items"][0]["kinds"], json!(["project.*", "member.*"]));
        let (_, html) = page(&s, "/projects/demo/webhooks").await;
        assert!(
            html.contains(&rx.url) && !html.contains("whsec_"),
            "listed, without the secret"
        );

        let detail = format!("/projects/demo/webhooks/{id}");
        let (st, html) = page(&s, &detail).await;
        assert_eq!(st, 200);
        assert!(html.contains("No deliveries yet"), "{html}");
        touch(&s, "demo", "ui").await;
        let log = log_until(&s, "demo", id, "a delivery", |l| {
            l.first().is_some_and(|d| d["status"] == "succeeded")
        })
        .await;
        let (_, html) = page(&s, &detail).await;
        assert!(
            html.contains("project.updated")
                && html.contains("succeeded")
                && html.contains("Redeliver"),
            "{html}"
        );

        let (st, location, _) = post_form(
            &s,
            &format!("{detail}/deliveries/{}/redeliver", log[0]["id"]),
            String::new(),
        )
        .await;
        assert_eq!((st, location.as_str()), (303, detail.as_str()));
        hits_at_least(&rx, 2).await;

        let (st, location, _) = post_form(
            &s,
            &detail,
            form_body(&[("url", &rx.url), ("kinds", "*"), ("version", "1")]),
        )
        .await;
        assert_eq!((st, location.as_str()), (303, detail.as_str()));
        let (_, one) = s
            .admin(
                Method::GET,
                &format!("/api/v1/projects/demo/webhooks/{id}"),
                None,
            )
            .await;
        assert_eq!(
            (one["active"].clone(), one["kinds"].clone()),
            (json!(false), json!(["*"])),
            "unchecked box: inactive"
        );

        let (st, _) = page(&s, "/projects/demo/webhooks/abc").await;
        assert_eq!(st, 404);
        let (st, location, _) = post_form(&s, &format!("{detail}/delete"), String::new()).await;
        assert_eq!((st, location.as_str()), (303, "/projects/demo/webhooks"));
        let (st, _) = page(&s, &detail).await;
        assert_eq!(st, 404);
        s.stop().await;
    }
}
