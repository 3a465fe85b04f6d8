//! Property test: arbitrary bodies sent to the create and update endpoints never produce a 500 or
//! a body outside the error shape, and a rejected request leaves the database as it was.

use crate::support::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("slug".to_string()),
        Just("name".to_string()),
        Just("description".to_string()),
        Just("visibility".to_string()),
        Just("version".to_string()),
        Just("role".to_string()),
        Just("password".to_string()),
        Just("scopes".to_string()),
        Just("is_admin".to_string()),
        "[a-z_]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop_oneof![
            Just("demo".to_string()),
            Just("public".to_string()),
            Just("owner".to_string()),
            Just("api".to_string()),
            Just("nul\u{0}inside".to_string()),
            ".{0,40}",
            "[a-z0-9-]{1,45}",
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Body {
    Json(Value),
    Bytes(Vec<u8>),
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        3 => json_value().prop_map(Body::Json),
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Body::Bytes),
    ]
}

const TARGETS: &[(&str, &str)] = &[
    ("POST", "/api/v1/projects"),
    ("PATCH", "/api/v1/projects/demo"),
    ("PUT", "/api/v1/projects/demo/members/bob"),
    ("POST", "/api/v1/users"),
    ("PATCH", "/api/v1/users/bob"),
    ("POST", "/api/v1/user/tokens"),
];

/// Everything a request could change, as comparable text.
async fn snapshot(s: &TestServer) -> String {
    let mut c = s.state.store.read().await.unwrap();
    let mut out = String::new();
    for table in ["users", "projects", "members", "api_tokens", "events"] {
        let rows = ouro_store::q(format!("SELECT COUNT(*) AS n FROM {table}"))
            .fetch_one(&mut c)
            .await
            .unwrap();
        out.push_str(&format!("{table}={} ", rows.i64("n").unwrap()));
    }
    let p =
        ouro_store::q("SELECT name, description, visibility, version FROM projects ORDER BY id")
            .fetch_all(&mut c)
            .await
            .unwrap();
    for r in p {
        out.push_str(&format!(
            "{}|{}|{}|{} ",
            r.text("name").unwrap(),
            r.text("description").unwrap(),
            r.text("visibility").unwrap(),
            r.i64("version").unwrap()
        ));
    }
    out
}

#[test]
fn arbitrary_bodies_never_500_and_rejections_change_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for db in backends() {
        let s = rt.block_on(async {
            let s = TestServer::start(&db).await;
            s.admin(
                Method::POST,
                "/api/v1/projects",
                Some(json!({"slug": "demo", "name": "Demo"})),
            )
            .await;
            s.user("bob").await;
            s
        });
        let cases = if db.name() == "sqlite" { 160 } else { 64 };
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&(0..TARGETS.len(), body()), |(t, body)| {
            rt.block_on(async {
                let (method, path) = TARGETS[t];
                let before = snapshot(&s).await;
                let mut r = s.req(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    path,
                    Some(&s.admin_token),
                );
                r = match &body {
                    Body::Json(v) => r.json(v),
                    Body::Bytes(b) => r.header("content-type", "application/json").body(b.clone()),
                };
                let (status, resp) = parse(r.send().await.unwrap()).await;
                prop_assert!(status < 500, "{method} {path} {body:?} -> {status} {resp}");
                if status >= 400 {
                    let e = &resp["error"];
                    prop_assert!(
                        e["code"].is_string() && e["message"].is_string(),
                        "error shape: {resp}"
                    );
                    let after = snapshot(&s).await;
                    prop_assert_eq!(before, after, "a rejected request changed the database");
                }
                Ok::<(), TestCaseError>(())
            })
        });
        rt.block_on(s.stop());
        if let Err(e) = result {
            panic!("{}: {e}", db.name());
        }
    }
}
