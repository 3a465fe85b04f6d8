//! The management pages over plain HTTP with a browser session: forms work, bad input comes back
//! as the same page with a message and a 4xx (never a 500), and the role rules hold.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::json;

use crate::support::*;

/// A signed-in browser: its cookies (session and one-off messages) and its CSRF token.
struct Session<'a> {
    s: &'a TestServer,
    cookies: BTreeMap<String, String>,
    csrf: String,
}

struct Page {
    status: u16,
    location: String,
    body: String,
}

impl<'a> Session<'a> {
    async fn sign_in(s: &'a TestServer, name: &str, password: &str) -> Session<'a> {
        let mut me = Session {
            s,
            cookies: BTreeMap::new(),
            csrf: String::new(),
        };
        let p = me
            .send(
                Method::POST,
                "/login",
                Some(&[
                    ("name", name),
                    ("password", password),
                    ("next", "/projects"),
                ]),
            )
            .await;
        assert_eq!(p.status, 303, "{name} signs in: {}", p.body);
        let p = me.get("/projects").await;
        let marker = "name=\"_csrf\" value=\"";
        let start = p
            .body
            .find(marker)
            .expect("a signed-in page carries the CSRF token")
            + marker.len();
        me.csrf = p.body[start..].split('"').next().unwrap().to_string();
        me
    }

    async fn send(&mut self, method: Method, path: &str, form: Option<&[(&str, &str)]>) -> Page {
        let mut r = self.s.req(method, path, None);
        if !self.cookies.is_empty() {
            let c = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            r = r.header("cookie", c);
        }
        if let Some(f) = form {
            r = r
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form_body(f));
        }
        let res = r.send().await.unwrap();
        for v in res.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let (kv, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = kv.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), val.to_string());
            }
        }
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = res.text().await.unwrap();
        assert_ne!(status, 500, "{path}: {body}");
        Page {
            status,
            location,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send(Method::GET, path, None).await
    }

    /// Posts a form with the session's CSRF token.
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.csrf.clone();
        let mut all = vec![("_csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.send(Method::POST, path, Some(&all)).await
    }

    /// Follows a post/redirect/get and returns the page it lands on.
    async fn post_and_follow(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let p = self.post(path, fields).await;
        assert_eq!(p.status, 303, "{path} redirects after success: {}", p.body);
        self.get(&p.location.clone()).await
    }
}

async fn project(s: &TestServer, slug: &str) {
    let (st, _) = s
        .admin(
            Method::POST,
            "/api/v1/projects",
            Some(json!({"slug": slug, "name": "Demo"})),
        )
        .await;
    assert_eq!(st, 201);
}

#[tokio::test]
async fn ui_project_settings_save_conflict_and_delete() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        project(&s, "demo").await;
        let mut a = Session::sign_in(&s, "admin", "admin-password").await;

        let p = a.get("/projects/demo/settings").await;
        assert_eq!(p.status, 200);
        assert!(
            p.body.contains(r#"name="version" value="1""#),
            "the form carries the version"
        );
        assert!(
            p.body.contains("id=\"delete-project\""),
            "owners see the danger zone"
        );

        let p = a
            .post_and_follow(
                "/projects/demo/settings",
                &[
                    ("version", "1"),
                    ("name", "Demo 2"),
                    ("description", "d"),
                    ("visibility", "internal"),
                ],
            )
            .await;
        assert!(p.body.contains("Settings saved."), "{}", p.body);
        assert!(p.body.contains(r#"value="Demo 2""#));
        assert!(
            !a.get("/projects/demo/settings")
                .await
                .body
                .contains("Settings saved."),
            "the notice shows once"
        );

        // Someone else saved first: the form comes back with the current values and says so.
        let p = a
            .post(
                "/projects/demo/settings",
                &[
                    ("version", "1"),
                    ("name", "Mine"),
                    ("description", ""),
                    ("visibility", "private"),
                ],
            )
            .await;
        assert_eq!(p.status, 409);
        assert!(p.body.contains("id=\"conflict\"") && p.body.contains("were not saved"));
        assert!(
            p.body.contains(r#"value="Demo 2""#) && p.body.contains(r#"name="version" value="2""#)
        );

        let p = a
            .post(
                "/projects/demo/settings",
                &[("version", "2"), ("name", "  "), ("visibility", "private")],
            )
            .await;
        assert_eq!(p.status, 422);
        assert!(
            p.body.contains(r#"aria-describedby="name-error""#)
                && p.body.contains("id=\"name-error\"")
        );
        let p = a
            .post(
                "/projects/demo/settings",
                &[("version", "2"), ("name", "x"), ("visibility", "secret")],
            )
            .await;
        assert_eq!(p.status, 422);
        assert!(p.body.contains("id=\"visibility-error\""));
        let p = a
            .post(
                "/projects/demo/settings",
                &[("version", "two"), ("name", "x"), ("visibility", "private")],
            )
            .await;
        assert_eq!(p.status, 422);
        let p = a
            .post(
                "/projects/demo/settings",
                &[
                    ("version", "2"),
                    ("name", "x"),
                    ("description", &"d".repeat(10_001)),
                    ("visibility", "private"),
                ],
            )
            .await;
        assert_eq!(p.status, 422);
        assert!(p.body.contains("id=\"description-error\""));

        // Without the CSRF token nothing changes.
        let p = a
            .send(
                Method::POST,
                "/projects/demo/settings",
                Some(&[("version", "2"), ("name", "x"), ("visibility", "private")]),
            )
            .await;
        assert_eq!(p.status, 403);

        let p = a.post("/projects/demo/delete", &[("confirm", "dem")]).await;
        assert_eq!(p.status, 422);
        assert!(p.body.contains("id=\"confirm-error\""));
        assert_eq!(
            s.admin(Method::GET, "/api/v1/projects/demo", None).await.0,
            200,
            "still there"
        );
        let p = a
            .post_and_follow("/projects/demo/delete", &[("confirm", "demo")])
            .await;
        assert!(p.body.contains("was deleted"), "{}", p.body);
        assert_eq!(
            s.admin(Method::GET, "/api/v1/projects/demo", None).await.0,
            404
        );

        // Maintainers edit settings but do not see or use the danger zone; developers see neither.
        project(&s, "demo").await;
        s.user("mia").await;
        s.user("dev").await;
        s.admin(
            Method::PUT,
            "/api/v1/projects/demo/members/mia",
            Some(json!({"role": "maintainer"})),
        )
        .await;
        s.admin(
            Method::PUT,
            "/api/v1/projects/demo/members/dev",
            Some(json!({"role": "developer"})),
        )
        .await;
        let mut m = Session::sign_in(&s, "mia", "password-123").await;
        let p = m.get("/projects/demo/settings").await;
        assert_eq!(p.status, 200);
        assert!(!p.body.contains("delete-project"));
        assert_eq!(
            m.post("/projects/demo/delete", &[("confirm", "demo")])
                .await
                .status,
            403
        );
        let mut d = Session::sign_in(&s, "dev", "password-123").await;
        assert_eq!(d.get("/projects/demo/settings").await.status, 403);
        s.stop().await;
    }
}

#[tokio::test]
async fn ui_members_add_change_remove_and_owner_rules() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        project(&s, "demo").await;
        for u in ["bob", "carol", "dan"] {
            s.user(u).await;
        }
        let mut a = Session::sign_in(&s, "admin", "admin-password").await;

        let p = a
            .post_and_follow(
                "/projects/demo/members",
                &[("user", "bob"), ("role", "maintainer")],
            )
            .await;
        assert!(
            p.body.contains("bob was added as maintainer."),
            "{}",
            p.body
        );
        assert!(p.body.contains(r#"data-user="bob""#));

        let p = a
            .post(
                "/projects/demo/members",
                &[("user", "nobody"), ("role", "viewer")],
            )
            .await;
        assert_eq!(p.status, 404);
        assert!(p.body.contains(r#"id="add-user-error""#) && p.body.contains("no user named"));
        assert!(p.body.contains(r#"value="nobody""#), "what was typed stays");
        let p = a
            .post(
                "/projects/demo/members",
                &[("user", "bob"), ("role", "viewer")],
            )
            .await;
        assert_eq!(p.status, 409);
        assert!(p.body.contains("already a member"));
        let p = a
            .post(
                "/projects/demo/members",
                &[("user", "carol"), ("role", "boss")],
            )
            .await;
        assert_eq!(p.status, 422);
        assert!(p.body.contains(r#"id="add-role-error""#));
        let p = a
            .post(
                "/projects/demo/members",
                &[("user", ""), ("role", "viewer")],
            )
            .await;
        assert_eq!(p.status, 422);

        // The last owner stays, with the reason on the page.
        let p = a
            .post("/projects/demo/members/remove", &[("user", "admin")])
            .await;
        assert_eq!(p.status, 409);
        assert!(p.body.contains(r#"id="members-error""#) && p.body.contains("at least one owner"));
        let p = a
            .post(
                "/projects/demo/members/role",
                &[("user", "admin"), ("role", "viewer")],
            )
            .await;
        assert_eq!(p.status, 409);
        let p = a
            .post(
                "/projects/demo/members/role",
                &[("user", "ghost"), ("role", "viewer")],
            )
            .await;
        assert_eq!(p.status, 404);

        // A maintainer manages members but not owners.
        let mut b = Session::sign_in(&s, "bob", "password-123").await;
        let p = b.get("/projects/demo/members").await;
        assert!(p.body.contains("add-member-form"));
        assert!(
            !p.body.contains(r#"<option value="owner""#),
            "maintainers cannot hand out owner"
        );
        let p = b
            .post(
                "/projects/demo/members",
                &[("user", "carol"), ("role", "owner")],
            )
            .await;
        assert_eq!(p.status, 403);
        assert!(p.body.contains("only owners"));
        let p = b
            .post("/projects/demo/members/remove", &[("user", "admin")])
            .await;
        assert_eq!(p.status, 403);
        let p = b
            .post_and_follow(
                "/projects/demo/members",
                &[("user", "carol"), ("role", "viewer")],
            )
            .await;
        assert!(p.body.contains("carol was added as viewer."));
        let p = b
            .post_and_follow(
                "/projects/demo/members/role",
                &[("user", "carol"), ("role", "developer")],
            )
            .await;
        assert!(p.body.contains("carol is now developer."));
        let p = b
            .post_and_follow("/projects/demo/members/remove", &[("user", "carol")])
            .await;
        assert!(p.body.contains("carol was removed"));
        assert!(!p.body.contains(r#"data-user="carol""#));

        // An owner grants ownership; then the first owner may step down.
        let p = a
            .post_and_follow(
                "/projects/demo/members/role",
                &[("user", "bob"), ("role", "owner")],
            )
            .await;
        assert!(p.body.contains("bob is now owner."));

        // Viewers read the list without forms and cannot post.
        b.post_and_follow(
            "/projects/demo/members",
            &[("user", "dan"), ("role", "viewer")],
        )
        .await;
        let mut d = Session::sign_in(&s, "dan", "password-123").await;
        let p = d.get("/projects/demo/members").await;
        assert_eq!(p.status, 200);
        assert!(
            p.body.contains(r#"data-user="bob""#)
                && !p.body.contains("add-member-form")
                && !p.body.contains("/members/remove")
        );
        assert_eq!(
            d.post(
                "/projects/demo/members",
                &[("user", "carol"), ("role", "viewer")]
            )
            .await
            .status,
            403
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn ui_tokens_create_show_once_and_revoke() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let mut a = Session::sign_in(&s, "admin", "admin-password").await;
        let p = a.get("/account/tokens").await;
        assert_eq!(p.status, 200);
        assert!(
            p.body.contains("id=\"token-list\""),
            "the harness token is listed"
        );

        for (fields, error) in [
            (
                vec![("name", "x"), ("scope", "api"), ("expires_days", "soon")],
                "expires-error",
            ),
            (
                vec![("name", "x"), ("scope", "api"), ("expires_days", "0")],
                "expires-error",
            ),
            (vec![("name", " "), ("scope", "api")], "token-name-error"),
            (vec![("name", "x"), ("scope", "root")], "scope-error"),
        ] {
            let p = a.post("/account/tokens", &fields).await;
            assert_eq!(p.status, 422, "{fields:?}");
            assert!(
                p.body.contains(&format!("id=\"{error}\"")),
                "{fields:?}: {}",
                p.body
            );
            assert!(!p.body.contains("id=\"new-token\""));
        }

        let p = a
            .post(
                "/account/tokens",
                &[
                    ("name", "ci"),
                    ("scope", "read_api"),
                    ("expires_days", "30"),
                ],
            )
            .await;
        assert_eq!(p.status, 201);
        let start = p.body.find("id=\"new-token\">").unwrap() + "id=\"new-token\">".len();
        let secret = p.body[start..].split('<').next().unwrap().to_string();
        assert!(secret.starts_with("ouro_"));
        assert!(p.body.contains("Authorization: Bearer"));
        assert_eq!(
            s.call(Method::GET, "/api/v1/user", Some(&secret), None)
                .await
                .0,
            200
        );
        assert_eq!(
            s.call(
                Method::POST,
                "/api/v1/projects",
                Some(&secret),
                Some(json!({"slug": "x", "name": "x"}))
            )
            .await
            .0,
            403,
            "read_api"
        );

        let p = a.get("/account/tokens").await;
        assert!(!p.body.contains(&secret), "the secret is shown only once");
        assert!(p.body.contains("read_api"));
        let mut conn = s.state.store.read().await.unwrap();
        let admin = ouro_store::accounts::user_by_name(&mut conn, "admin")
            .await
            .unwrap()
            .unwrap();
        let id = ouro_store::accounts::list_tokens(&mut conn, admin.id)
            .await
            .unwrap()
            .into_iter()
            .find(|t| t.name == "ci")
            .unwrap()
            .id
            .to_string();
        drop(conn);
        let p = a
            .post_and_follow("/account/tokens/revoke", &[("id", &id)])
            .await;
        assert!(p.body.contains("Token revoked."));
        assert!(p.body.contains(">revoked<"));
        let (status, body) = s
            .call(Method::GET, "/api/v1/user", Some(&secret), None)
            .await;
        assert_eq!(status, 401, "a revoked token no longer works");
        assert_eq!(error_code(&body), "auth.required");
        assert_eq!(
            a.post("/account/tokens/revoke", &[("id", &id)])
                .await
                .status,
            404
        );
        assert_eq!(
            a.post("/account/tokens/revoke", &[("id", "abc")])
                .await
                .status,
            404
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn ui_admin_users_create_and_grant() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let mut a = Session::sign_in(&s, "admin", "admin-password").await;
        let p = a.get("/admin/users").await;
        assert_eq!(p.status, 200);
        assert!(p.body.contains(r#"data-user="admin""#));

        let p = a
            .post_and_follow(
                "/admin/users",
                &[("name", "erin"), ("password", "erin-password")],
            )
            .await;
        assert!(p.body.contains("Created the account erin."), "{}", p.body);
        let p = a
            .post(
                "/admin/users",
                &[("name", "erin"), ("password", "erin-password")],
            )
            .await;
        assert_eq!(p.status, 409);
        assert!(p.body.contains("id=\"user-name-error\""));
        let p = a
            .post(
                "/admin/users",
                &[("name", "Bad Name"), ("password", "long-enough")],
            )
            .await;
        assert_eq!(p.status, 422);
        assert!(
            p.body.contains("id=\"user-name-error\"") && p.body.contains(r#"value="Bad Name""#)
        );
        let p = a
            .post(
                "/admin/users",
                &[
                    ("name", "frank"),
                    ("password", "short"),
                    ("is_admin", "true"),
                ],
            )
            .await;
        assert_eq!(p.status, 422);
        assert!(p.body.contains("id=\"user-password-error\"") && p.body.contains("checked"));

        let p = a
            .post_and_follow("/admin/users/admin", &[("name", "erin"), ("admin", "true")])
            .await;
        assert!(p.body.contains("erin is now an administrator."));
        let p = a
            .post_and_follow(
                "/admin/users/admin",
                &[("name", "erin"), ("admin", "false")],
            )
            .await;
        assert!(p.body.contains("erin is no longer an administrator."));
        let p = a
            .post(
                "/admin/users/admin",
                &[("name", "admin"), ("admin", "false")],
            )
            .await;
        assert_eq!(p.status, 422);
        assert!(p.body.contains("your own admin rights"));
        assert_eq!(
            a.post(
                "/admin/users/admin",
                &[("name", "ghost"), ("admin", "true")]
            )
            .await
            .status,
            404
        );

        // Only administrators get here; everyone else signed in is told no, anonymous visitors sign in first.
        let mut e = Session::sign_in(&s, "erin", "erin-password").await;
        assert_eq!(e.get("/admin/users").await.status, 403);
        let anon = s
            .req(Method::GET, "/admin/users", None)
            .send()
            .await
            .unwrap();
        assert_eq!(anon.status(), 303);
        assert_eq!(anon.headers()["location"], "/login?next=/admin/users");
        let anon = s
            .req(Method::GET, "/account/tokens", None)
            .send()
            .await
            .unwrap();
        assert_eq!(anon.headers()["location"], "/login?next=/account/tokens");
        s.stop().await;
    }
}
