//! Attachments on work items: upload (raw body over the API, multipart from the item page),
//! list, download headers, the size limit, sanitised names, who may upload and delete.

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

const ITEMS: &str = "/api/v1/projects/demo/items";

async fn with_item(s: &TestServer) -> String {
    let (st, body) = s
        .admin(
            Method::POST,
            "/api/v1/projects",
            Some(json!({"slug": "demo", "name": "Demo"})),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let (st, item) = s
        .admin(
            Method::POST,
            ITEMS,
            Some(json!({"type": "story", "title": "Has files"})),
        )
        .await;
    assert_eq!(st, 201, "{item}");
    item["key"].as_str().unwrap().to_string()
}

async fn member(s: &TestServer, name: &str, role: &str) -> String {
    let token = s.user(name).await;
    let (st, body) = s
        .admin(
            Method::PUT,
            &format!("/api/v1/projects/demo/members/{name}"),
            Some(json!({ "role": role })),
        )
        .await;
    assert!(st == 200 || st == 201, "{st} {body}");
    token
}

/// Uploads `bytes` as a raw body; returns status and parsed body.
async fn upload(
    s: &TestServer,
    token: &str,
    key: &str,
    filename: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    let r = s
        .req(
            Method::POST,
            &format!(
                "{ITEMS}/{key}/attachments?filename={}",
                ouro_server::ui::url_encode(filename)
            ),
            Some(token),
        )
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .unwrap();
    parse(r).await
}

#[tokio::test]
async fn attachments_over_http() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        let key = with_item(&s).await;
        let admin = s.admin_token.clone();

        // Upload, with a path in the name: only the last component is kept.
        let text = b"hello, attachments\n".to_vec();
        let (st, a) = upload(
            &s,
            &admin,
            &key,
            "../../etc/notes.txt",
            "text/html",
            text.clone(),
        )
        .await;
        assert_eq!(st, 201, "{a}");
        assert_eq!(a["filename"], "notes.txt", "{a}");
        assert_eq!(a["size"], text.len() as i64);
        assert_eq!(a["uploader"], "admin");
        assert_eq!(a["sha256"].as_str().unwrap().len(), 64);
        let id = a["id"].as_i64().unwrap();

        let (st, list) = s
            .admin(Method::GET, &format!("{ITEMS}/{key}/attachments"), None)
            .await;
        assert_eq!(st, 200);
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
        assert_eq!(list["items"][0]["id"], id);

        // Download: same bytes, never served as HTML.
        let r = s
            .req(
                Method::GET,
                &format!("{ITEMS}/{key}/attachments/{id}"),
                Some(&admin),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let h = r.headers().clone();
        assert_eq!(h["content-type"], "application/octet-stream");
        assert_eq!(
            h["content-disposition"],
            "attachment; filename*=UTF-8''notes.txt"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(r.bytes().await.unwrap().to_vec(), text);

        // An allow-listed image keeps its type; SVG does not.
        let png = vec![0x89, b'P', b'N', b'G', 1, 2, 3];
        let (st, p) = upload(&s, &admin, &key, "pic é.png", "image/png", png.clone()).await;
        assert_eq!(st, 201, "{p}");
        let r = s
            .req(
                Method::GET,
                &format!("{ITEMS}/{key}/attachments/{}", p["id"]),
                Some(&admin),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-type"], "image/png");
        assert_eq!(
            r.headers()["content-disposition"],
            "attachment; filename*=UTF-8''pic%20%C3%A9.png"
        );
        assert_eq!(r.bytes().await.unwrap().to_vec(), png);
        let (st, svg) = upload(
            &s,
            &admin,
            &key,
            "x.svg",
            "image/svg+xml",
            b"<svg/>".to_vec(),
        )
        .await;
        assert_eq!(st, 201, "{svg}");
        let r = s
            .req(
                Method::GET,
                &format!("{ITEMS}/{key}/attachments/{}", svg["id"]),
                Some(&admin),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-type"], "application/octet-stream");

        // Larger than max_body_bytes (1 MiB) but under attachment_max_bytes (10 MiB): accepted.
        let big = vec![7u8; 1024 * 1024 + 4096];
        let (st, b) = upload(
            &s,
            &admin,
            &key,
            "big.bin",
            "application/octet-stream",
            big.clone(),
        )
        .await;
        assert_eq!(st, 201, "{b}");
        assert_eq!(b["size"], big.len() as i64);

        // A name is required; unknown items and attachments are 404.
        let r = s
            .req(
                Method::POST,
                &format!("{ITEMS}/{key}/attachments"),
                Some(&admin),
            )
            .body("x")
            .send()
            .await
            .unwrap();
        let (st, body) = parse(r).await;
        assert_eq!(
            (st, error_code(&body)),
            (422, "request.validation_failed".into()),
            "{body}"
        );
        let (st, body) = upload(&s, &admin, "DEMO-999", "a.txt", "text/plain", b"x".to_vec()).await;
        assert_eq!((st, error_code(&body)), (404, "item.not_found".into()));
        let (st, body) = s
            .admin(
                Method::GET,
                &format!("{ITEMS}/{key}/attachments/99999"),
                None,
            )
            .await;
        assert_eq!(
            (st, error_code(&body)),
            (404, "item.attachment_not_found".into())
        );

        // Viewers read and download but cannot upload.
        let vera = member(&s, "vera", "viewer").await;
        let (st, _) = s
            .call(
                Method::GET,
                &format!("{ITEMS}/{key}/attachments"),
                Some(&vera),
                None,
            )
            .await;
        assert_eq!(st, 200);
        let (st, body) = upload(&s, &vera, &key, "v.txt", "text/plain", b"v".to_vec()).await;
        assert_eq!((st, error_code(&body)), (403, "auth.forbidden".into()));

        // Developers delete their own files, not other people's; maintainers delete any.
        let dana = member(&s, "dana", "developer").await;
        let dev = member(&s, "devon", "developer").await;
        let (st, mine) = upload(&s, &dana, &key, "dana.txt", "text/plain", b"d".to_vec()).await;
        assert_eq!(st, 201, "{mine}");
        let mine_path = format!("{ITEMS}/{key}/attachments/{}", mine["id"]);
        let (st, body) = s.call(Method::DELETE, &mine_path, Some(&dev), None).await;
        assert_eq!((st, error_code(&body)), (403, "auth.forbidden".into()));
        let (st, _) = s.call(Method::DELETE, &mine_path, Some(&dana), None).await;
        assert_eq!(st, 204);
        let (st, _) = s.call(Method::GET, &mine_path, Some(&dana), None).await;
        assert_eq!(st, 404);
        let (st, body) = s
            .call(
                Method::DELETE,
                &format!("{ITEMS}/{key}/attachments/{id}"),
                Some(&dana),
                None,
            )
            .await;
        assert_eq!(st, 403, "{body}");
        let (st, _) = s
            .admin(
                Method::DELETE,
                &format!("{ITEMS}/{key}/attachments/{id}"),
                None,
            )
            .await;
        assert_eq!(st, 204);

        // Every change is in the ledger.
        let (st, evs) = s
            .admin(
                Method::GET,
                "/api/v1/projects/demo/events?kind=item.attached",
                None,
            )
            .await;
        assert_eq!(st, 200, "{evs}");
        let evs = evs["items"].as_array().unwrap().clone();
        assert_eq!(evs.len(), 7, "{evs:?}");
        let removed = evs
            .iter()
            .filter(|e| e["payload"]["removed"] == true)
            .count();
        assert_eq!(removed, 2, "{evs:?}");
        assert!(evs.iter().all(|e| e["payload"]["key"] == key.as_str()));
        s.stop().await;
    }
}

#[tokio::test]
async fn attachment_size_limit() {
    for db in backends() {
        let s = TestServer::start_with(
            &db,
            Options {
                tweak: |st| st.attachment_max_bytes = 2048,
                ..Options::default()
            },
        )
        .await;
        let key = with_item(&s).await;
        let admin = s.admin_token.clone();
        let (st, body) = upload(
            &s,
            &admin,
            &key,
            "ok.bin",
            "application/octet-stream",
            vec![1; 2048],
        )
        .await;
        assert_eq!(st, 201, "{body}");
        let (st, body) = upload(
            &s,
            &admin,
            &key,
            "big.bin",
            "application/octet-stream",
            vec![1; 2049],
        )
        .await;
        assert_eq!(
            (st, error_code(&body)),
            (413, "item.attachment_too_large".into()),
            "{body}"
        );
        assert_eq!(body["error"]["details"]["max_bytes"], 2048);
        let (_, list) = s
            .admin(Method::GET, &format!("{ITEMS}/{key}/attachments"), None)
            .await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
        s.stop().await;
    }
}

fn multipart(boundary: &str, filename: &str, content_type: &str, data: &[u8]) -> Vec<u8> {
    let mut b = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    b.extend_from_slice(data);
    b.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    b
}

async fn post_multipart(
    s: &TestServer,
    token: Option<&str>,
    path: &str,
    body: Vec<u8>,
) -> (u16, String, String) {
    let r = s
        .req(Method::POST, path, token)
        .header("content-type", "multipart/form-data; boundary=b0undary")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, location, r.text().await.unwrap())
}

async fn page(s: &TestServer, path: &str) -> String {
    let r = s
        .req(Method::GET, path, Some(&s.admin_token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.text().await.unwrap()
}

#[tokio::test]
async fn attachments_on_the_item_page() {
    for db in backends() {
        let s = TestServer::start_with(
            &db,
            Options {
                tweak: |st| st.attachment_max_bytes = 4096,
                ..Options::default()
            },
        )
        .await;
        let key = with_item(&s).await;
        let item_page = format!("/projects/demo/plan/items/{key}");
        let html = page(&s, &item_page).await;
        assert!(html.contains("No attachments."), "{html}");
        assert!(html.contains("enctype=\"multipart/form-data\""));
        assert!(
            html.contains("/attachments?_csrf="),
            "the upload form carries the token"
        );

        // A hostile name is stored sanitised and shown escaped.
        let body = multipart(
            "b0undary",
            "<script>alert(1)<script>.txt",
            "text/plain",
            b"evil",
        );
        let (st, loc, text) = post_multipart(
            &s,
            Some(&s.admin_token),
            &format!("{item_page}/attachments"),
            body,
        )
        .await;
        assert_eq!(st, 303, "{text}");
        assert!(loc.ends_with("#attachments"), "{loc}");
        let html = page(&s, &item_page).await;
        assert!(!html.contains("<script>alert(1)"), "the name is escaped");
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;script&#62;.txt"),
            "{html}"
        );
        let (_, list) = s
            .admin(Method::GET, &format!("{ITEMS}/{key}/attachments"), None)
            .await;
        let a = &list["items"][0];
        assert_eq!(a["filename"], "<script>alert(1)<script>.txt", "{a}");
        let id = a["id"].as_i64().unwrap();
        assert!(html.contains(&format!(
            "/api/v1/projects/demo/items/{key}/attachments/{id}"
        )));

        // Over the limit: the page says why, with 413.
        let body = multipart(
            "b0undary",
            "big.bin",
            "application/octet-stream",
            &[0u8; 5000],
        );
        let (st, _, text) = post_multipart(
            &s,
            Some(&s.admin_token),
            &format!("{item_page}/attachments"),
            body,
        )
        .await;
        assert_eq!(st, 413);
        assert!(text.contains("id=\"attach-error\""), "{text}");

        // No file part: 422 on the page.
        let (st, _, text) = post_multipart(
            &s,
            Some(&s.admin_token),
            &format!("{item_page}/attachments"),
            b"--b0undary--\r\n".to_vec(),
        )
        .await;
        assert_eq!(st, 422, "{text}");

        // Signed out: no upload.
        let body = multipart("b0undary", "a.txt", "text/plain", b"a");
        let (st, _, _) = post_multipart(&s, None, &format!("{item_page}/attachments"), body).await;
        assert!(st == 401 || st == 303, "{st}");

        // Delete from the page.
        let r = s
            .req(
                Method::POST,
                &format!("{item_page}/attachments/{id}/delete"),
                Some(&s.admin_token),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&[]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 303);
        let html = page(&s, &item_page).await;
        assert!(html.contains("No attachments."), "{html}");
        s.stop().await;
    }
}
