//! Every registered route declares a permission; this test walks all of them and proves each one
//! refuses an anonymous caller and a caller whose role is one step too small. A new route that
//! forgets its guard (or declares the wrong one) fails here.

use crate::support::*;
use ouro_core::{Permission, Role};
use reqwest::Method;
use serde_json::json;

fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| match seg {
            "{slug}" => "secret",
            "{user}" | "{name}" => "admin",
            s if s.starts_with('{') => "1",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn refused_anonymously(api: bool, path: &str, status: u16, location: Option<&str>) -> bool {
    // git smart HTTP answers 401 with a Basic challenge so git asks for credentials.
    if api || path.starts_with("/git/") {
        status == 401
    } else {
        status == 303 && location.is_some_and(|l| l.starts_with("/login"))
    }
}

#[tokio::test]
async fn every_route_refuses_callers_it_should() {
    let db = &backends()[0];
    let s = TestServer::start(db).await;
    s.admin(
        Method::POST,
        "/api/v1/projects",
        Some(json!({"slug": "secret", "name": "Secret"})),
    )
    .await;
    // One user per project role, plus an outsider.
    let mut by_role = Vec::new();
    for role in Role::ALL {
        let name = format!("r-{}", role.as_str());
        let tok = s.user(&name).await;
        let (st, _) = s
            .admin(
                Method::PUT,
                &format!("/api/v1/projects/secret/members/{name}"),
                Some(json!({"role": role})),
            )
            .await;
        assert_eq!(st, 200);
        by_role.push((role, tok));
    }
    let outsider = s.user("outsider").await;

    let specs = ouro_server::registry(s.state.clone()).into_parts().1;
    assert!(specs.len() > 20, "the registry lists the routes");
    let mut checked = 0;
    for spec in &specs {
        let path = concrete(spec.path);
        let method = Method::from_bytes(spec.method.as_str().as_bytes()).unwrap();
        let send = |tok: Option<String>| {
            let mut r = s.req(method.clone(), &path, tok.as_deref());
            if method != Method::GET {
                r = r.header("content-type", "application/json").body("{}");
            }
            r.send()
        };
        let what = format!(
            "{} {} ({})",
            spec.method,
            spec.path,
            spec.permission.describe()
        );
        if spec.permission == Permission::Public {
            let r = send(None).await.unwrap();
            // The runner protocol authenticates runners (their token), not users.
            let runner = spec.path.starts_with("/api/v1/runner/") && r.status().as_u16() == 401;
            assert!(
                runner || (r.status().as_u16() != 401 && r.status().as_u16() < 500),
                "{what}: public route answered {}",
                r.status()
            );
            continue;
        }
        let r = send(None).await.unwrap();
        let loc = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        assert!(
            refused_anonymously(spec.api, spec.path, r.status().as_u16(), loc.as_deref()),
            "{what}: anonymous got {}",
            r.status()
        );
        match spec.permission {
            Permission::Admin => {
                let r = send(Some(outsider.clone())).await.unwrap();
                assert_eq!(r.status().as_u16(), 403, "{what}: non-admin");
            }
            Permission::Project(min) => {
                let r = send(Some(outsider.clone())).await.unwrap();
                assert_eq!(
                    r.status().as_u16(),
                    404,
                    "{what}: non-member must not learn the project exists"
                );
                if let Some((below, tok)) = by_role.iter().rfind(|(r, _)| *r < min) {
                    let r = send(Some(tok.clone())).await.unwrap();
                    assert_eq!(
                        r.status().as_u16(),
                        403,
                        "{what}: {} is below {}",
                        below.as_str(),
                        min.as_str()
                    );
                }
                // The smallest sufficient role gets past the guard (whatever the handler then says);
                // deletions are left out so the project survives the walk.
                if spec.method == axum::http::Method::DELETE {
                    checked += 1;
                    continue;
                }
                let (_, tok) = by_role.iter().find(|(r, _)| *r >= min).unwrap();
                let st = send(Some(tok.clone())).await.unwrap().status().as_u16();
                assert!(
                    st != 401 && st != 403 && st < 500,
                    "{what}: {} was refused with {st}",
                    min.as_str()
                );
            }
            Permission::Authenticated | Permission::Public => {}
        }
        checked += 1;
    }
    assert!(checked > 10);
    s.stop().await;
}
