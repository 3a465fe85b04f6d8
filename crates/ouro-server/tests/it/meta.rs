use crate::support::*;
use reqwest::Method;

#[tokio::test]
async fn health_and_readiness() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let (st, body) = s.call(Method::GET, "/healthz", None, None).await;
        assert_eq!((st, body["status"].as_str()), (200, Some("ok")));
        let (st, body) = s.call(Method::GET, "/readyz", None, None).await;
        assert_eq!((st, body["database"].as_str()), (200, Some(db.name())));
        s.stop().await;
    }
}

#[tokio::test]
async fn metrics_count_requests_events_and_pool() {
    let s = TestServer::start(&backends()[0]).await;
    s.admin(
        Method::POST,
        "/api/v1/projects",
        Some(serde_json::json!({"slug": "m", "name": "M"})),
    )
    .await;
    s.admin(Method::GET, "/api/v1/projects/m", None).await;
    s.admin(Method::GET, "/api/v1/projects/nope", None).await;
    let r = s.req(Method::GET, "/metrics", None).send().await.unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    for needle in [
        "ouro_http_requests_total{route=\"/api/v1/projects/{slug}\",method=\"GET\",status=\"200\"} 1",
        "ouro_http_requests_total{route=\"/api/v1/projects/{slug}\",method=\"GET\",status=\"404\"} 1",
        "ouro_http_request_duration_seconds_bucket{le=",
        "ouro_db_pool_connections ",
        "ouro_webhook_deliveries_total{outcome=\"failure\"} 0",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    // project.created + member.added, plus the test's own user and token.
    let appended = text
        .lines()
        .find(|l| l.starts_with("ouro_events_appended_total "))
        .unwrap();
    let n: u64 = appended.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 4, "{appended}");

    // Every in-process consumer reports its backlog, which drains to 0.
    let mut tries = 0;
    loop {
        let text = s
            .req(Method::GET, "/metrics", None)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let lags: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("ouro_event_consumer_lag{"))
            .collect();
        for c in [
            "webhooks",
            "plan-automation",
            "plan-references",
            "plan-notifications",
        ] {
            assert!(
                lags.iter()
                    .any(|l| l.contains(&format!("consumer=\"{c}\""))),
                "no lag gauge for {c} in {lags:?}"
            );
        }
        if lags.iter().all(|l| l.ends_with(" 0")) {
            break;
        }
        tries += 1;
        assert!(tries < 100, "consumers did not catch up: {lags:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn security_headers_are_set() {
    let s = TestServer::start(&backends()[0]).await;
    let r = s.req(Method::GET, "/login", None).send().await.unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    s.stop().await;
}

/// SIGTERM/SIGINT: the server stops accepting but lets an in-flight request finish.
#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let s = TestServer::start(&backends()[0]).await;
    // A slow in-flight upload: the body arrives in two parts with a pause between them.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let req = s
        .req(Method::POST, "/api/v1/projects", Some(&s.admin_token))
        .header("content-type", "application/json")
        .body(body)
        .send();
    let inflight = tokio::spawn(req);
    tx.send(Ok(b"{\"slug\":\"late\",".to_vec())).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let base = s.base.clone();
    let stopping = tokio::spawn(s.stop());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // New connections are refused while the old request is still being served.
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "still accepting after shutdown"
    );
    tx.send(Ok(b"\"name\":\"Late\"}".to_vec())).await.unwrap();
    drop(tx);
    let resp = inflight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 201, "the in-flight request completed");
    stopping.await.unwrap();
}
