//! Browser-side authentication over plain HTTP: setup link, sessions, CSRF, throttling.

use crate::support::*;
use reqwest::Method;

fn cookie_of(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("ouro_session="))
        .map(|v| v.split(';').next().unwrap().to_string())
}

async fn csrf_of(s: &TestServer, cookie: &str, path: &str) -> String {
    let html = s
        .client
        .get(s.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let i = html
        .find("name=\"_csrf\" value=\"")
        .expect("page has a CSRF field")
        + 20;
    html[i..i + html[i..].find('"').unwrap()].to_string()
}

#[tokio::test]
async fn setup_link_works_once_then_sessions_and_csrf_protect_forms() {
    for db in backends() {
        let s = TestServer::start_with(
            &db,
            Options {
                with_admin: false,
                ..Default::default()
            },
        )
        .await;
        let link = s
            .setup_url
            .clone()
            .expect("a setup link when no user exists");
        let token = link.split("token=").nth(1).unwrap().to_string();
        assert_eq!(s.client.get(&link).send().await.unwrap().status(), 200);
        assert_eq!(
            s.client
                .get(s.url("/setup?token=wrong"))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        // A too-short password re-renders the form with the error next to the field.
        let r = s
            .client
            .post(s.url("/setup"))
            .form(&[
                ("token", token.as_str()),
                ("name", "root"),
                ("password", "short"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        assert!(r.text().await.unwrap().contains("id=\"password-error\""));
        let r = s
            .client
            .post(s.url("/setup"))
            .form(&[
                ("token", token.as_str()),
                ("name", "root"),
                ("password", "long-enough-pw"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let cookie = cookie_of(&r).expect("signed in after setup");
        assert!(
            r.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .contains("HttpOnly")
        );
        // The link is dead now.
        assert_eq!(s.client.get(&link).send().await.unwrap().status(), 404);
        let r = s
            .client
            .post(s.url("/setup"))
            .form(&[
                ("token", token.as_str()),
                ("name", "evil"),
                ("password", "long-enough-pw"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);

        // A form post without the CSRF token is refused; with it, it works.
        let r = s
            .client
            .post(s.url("/projects"))
            .header("cookie", &cookie)
            .form(&[("name", "A"), ("slug", "a")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let csrf = csrf_of(&s, &cookie, "/projects/new").await;
        let r = s
            .client
            .post(s.url("/projects"))
            .header("cookie", &cookie)
            .form(&[
                ("_csrf", csrf.as_str()),
                ("name", "A"),
                ("slug", "a"),
                ("visibility", "private"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(
            (
                r.status().as_u16(),
                r.headers()["location"].to_str().unwrap()
            ),
            (303, "/projects/a")
        );
        let page = s
            .client
            .get(s.url("/projects/a"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains("project.created"),
            "the overview shows activity"
        );
        // A JSON API write with only the cookie needs the header token.
        let r = s
            .client
            .post(s.url("/api/v1/projects"))
            .header("cookie", &cookie)
            .json(&serde_json::json!({"slug": "b", "name": "B"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let r = s
            .client
            .post(s.url("/api/v1/projects"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .json(&serde_json::json!({"slug": "b", "name": "B"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);

        // Sign out kills the session server-side.
        let r = s
            .client
            .post(s.url("/logout"))
            .header("cookie", &cookie)
            .form(&[("_csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let r = s
            .client
            .get(s.url("/projects/new"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(
            (
                r.status().as_u16(),
                r.headers()["location"].to_str().unwrap()
            ),
            (303, "/login?next=/projects/new")
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn sign_in_is_throttled_per_account_and_audited() {
    let s = TestServer::start_with(
        &backends()[0],
        Options {
            tweak: |st| st.throttle_per_account = 3,
            ..Default::default()
        },
    )
    .await;
    let login = |pw: &'static str| {
        s.client
            .post(s.url("/login"))
            .form(&[("name", "admin"), ("password", pw), ("next", "/projects")])
            .send()
    };
    for _ in 0..3 {
        let r = login("wrong-password").await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.text().await.unwrap().contains("not right"));
    }
    // Even the right password is refused while throttled.
    let r = login("admin-password").await.unwrap();
    assert_eq!(r.status(), 429);
    let (_, evs) = s
        .admin(Method::GET, "/api/v1/events?kind=user.sign_in_failed", None)
        .await;
    let items = evs["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[3]["payload"]["reason"], "throttled");
    assert!(items[0]["payload"]["ip"].is_string());

    // Another account is not affected; a successful sign-in is audited.
    s.user("carol").await;
    let r = s
        .client
        .post(s.url("/login"))
        .form(&[
            ("name", "carol"),
            ("password", "password-123"),
            ("next", "//evil.example"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["location"].to_str().unwrap()
        ),
        (303, "/projects"),
        "no open redirect"
    );
    let (_, evs) = s
        .admin(Method::GET, "/api/v1/events?kind=user.signed_in", None)
        .await;
    assert_eq!(evs["items"][0]["actor"], "user:carol");
    s.stop().await;
}

/// The project navigation offers settings and webhooks only to those who may open them.
#[tokio::test]
async fn project_nav_shows_management_links_to_maintainers_only() {
    let s = TestServer::start(&backends()[0]).await;
    s.admin(
        Method::POST,
        "/api/v1/projects",
        Some(serde_json::json!({"slug": "nav", "name": "Nav"})),
    )
    .await;
    let viewer = s.user("vic").await;
    s.admin(
        Method::PUT,
        "/api/v1/projects/nav/members/vic",
        Some(serde_json::json!({"role": "viewer"})),
    )
    .await;
    let page = |tok: String| {
        let s = &s;
        async move {
            s.req(Method::GET, "/projects/nav", Some(&tok))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let as_viewer = page(viewer).await;
    assert!(as_viewer.contains("/projects/nav/members"));
    assert!(
        !as_viewer.contains("/projects/nav/settings")
            && !as_viewer.contains("/projects/nav/webhooks")
    );
    let as_owner = page(s.admin_token.clone()).await;
    assert!(
        as_owner.contains("/projects/nav/settings") && as_owner.contains("/projects/nav/webhooks")
    );
    s.stop().await;
}
