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
