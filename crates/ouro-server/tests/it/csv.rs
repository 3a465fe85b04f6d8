//! CSV export and import over HTTP: Jira columns, all-or-nothing validation, dry runs, round
//! trips and formula escaping.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

async fn setup(s: &TestServer) {
    let (st, body) = s
        .admin(
            Method::POST,
            "/api/v1/projects",
            Some(json!({"slug": "demo", "name": "Demo"})),
        )
        .await;
    assert_eq!(st, 201, "{body}");
}

async fn import(s: &TestServer, csv: &str, dry_run: bool) -> (u16, Value) {
    let r = s
        .req(
            Method::POST,
            &format!("/api/v1/projects/demo/imports?dry_run={dry_run}"),
            Some(&s.admin_token.clone()),
        )
        .header("content-type", "text/csv")
        .body(csv.to_string())
        .send()
        .await
        .unwrap();
    parse(r).await
}

async fn items(s: &TestServer) -> Vec<Value> {
    let (st, body) = s
        .admin(Method::GET, "/api/v1/projects/demo/items?limit=500", None)
        .await;
    assert_eq!(st, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

async fn export(s: &TestServer, q: &str) -> String {
    let r = s
        .req(
            Method::GET,
            &format!("/api/v1/projects/demo/items.csv?q={q}"),
            Some(&s.admin_token.clone()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    r.text().await.unwrap()
}

const JIRA: &str = "Issue key,Issue id,Summary,Issue Type,Status,Priority,Description,Story Points,Parent,Labels,Labels\r\n\
OLD-1,10001,Checkout epic,Epic,To Do,Highest,,,,web,\r\n\
OLD-2,10002,Pay with card,Story,In Progress,Low,\"First line, with comma\nsecond \"\"quoted\"\" line\",3,10001,web,payments\r\n\
OLD-3,10003,Strange status,Bug,Waiting for Godot,Medium,,,,,\r\n";

#[tokio::test]
async fn jira_csv_imports_with_parents_and_multiline_descriptions() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        setup(&s).await;
        let (st, body) = import(&s, JIRA, false).await;
        assert_eq!(st, 201, "{body}");
        assert_eq!(body["created"], 3);
        let all = items(&s).await;
        assert_eq!(all.len(), 3);
        let by_title = |t: &str| all.iter().find(|i| i["title"] == t).unwrap().clone();
        let epic = by_title("Checkout epic");
        assert_eq!(epic["type"], "epic");
        assert_eq!(epic["priority"], "critical");
        let story = by_title("Pay with card");
        assert_eq!(
            story["description"],
            "First line, with comma\nsecond \"quoted\" line"
        );
        assert_eq!(story["estimate"], 3);
        assert_eq!(story["priority"], "low");
        assert_eq!(
            story["state"].as_str().unwrap().to_lowercase(),
            "in progress"
        );
        assert_eq!(story["parent"], epic["key"]);
        assert_eq!(story["labels"], json!(["payments", "web"]));
        let bug = by_title("Strange status");
        let row3 = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["row"] == 4)
            .unwrap();
        assert!(
            row3["warnings"][0]
                .as_str()
                .unwrap()
                .contains("Waiting for Godot"),
            "{row3}"
        );
        assert_eq!(bug["state_category"], "todo");
        s.stop().await;
    }
}

#[tokio::test]
async fn one_bad_row_imports_nothing_and_dry_run_writes_nothing() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        setup(&s).await;
        let bad = "Summary,Issue Type,Priority,Story Points\r\nGood one,Story,High,2\r\n,Story,High,1\r\nAlso good,Bug,Bogus,x\r\n";
        let (st, body) = import(&s, bad, false).await;
        assert_eq!(st, 422, "{body}");
        assert_eq!(error_code(&body), "request.validation_failed");
        let rows = body["error"]["details"]["rows"].as_array().unwrap();
        let found: Vec<(u64, &str)> = rows
            .iter()
            .map(|r| (r["row"].as_u64().unwrap(), r["column"].as_str().unwrap()))
            .collect();
        assert!(found.contains(&(3, "Summary")), "{body}");
        assert!(found.contains(&(4, "priority")), "{body}");
        assert!(found.contains(&(4, "estimate")), "{body}");
        assert!(items(&s).await.is_empty());

        // An unknown type is found when creating: still nothing is written.
        let (st, body) = import(&s, "Summary,Issue Type\nFine,Story\nOdd,Spaceship\n", false).await;
        assert_eq!(st, 422, "{body}");
        assert_eq!(body["error"]["details"]["rows"][0]["row"], 3);
        assert!(items(&s).await.is_empty());

        let (st, body) = import(&s, "Summary\nOnly a preview\n", true).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(body["dry_run"], true);
        assert_eq!(body["items"][0]["item"]["title"], "Only a preview");
        assert!(items(&s).await.is_empty());
        s.stop().await;
    }
}

#[tokio::test]
async fn export_escapes_formulas_and_round_trips() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        setup(&s).await;
        for (title, desc) in [
            ("=HYPERLINK(\"http://evil\")", "plain"),
            ("<script>alert(1)</script>", "line one\nline \"two\", end"),
        ] {
            let (st, body) = s
                .admin(
                    Method::POST,
                    "/api/v1/projects/demo/items",
                    Some(json!({"type": "story", "title": title, "description": desc, "labels": ["a", "b"], "estimate": 5})),
                )
                .await;
            assert_eq!(st, 201, "{body}");
            assert_eq!(body["title"], title);
        }
        let text = export(&s, "").await;
        assert!(text.starts_with("key,type,title,state,priority,assignee,reporter,labels,estimate,parent,description,created,updated\r\n"));
        assert!(
            text.contains("\"'=HYPERLINK(\"\"http://evil\"\")\""),
            "{text}"
        );
        assert!(text.contains("<script>alert(1)</script>"), "{text}");
        // The backlog offers the export of what it shows.
        let (st, page) = s
            .req(
                Method::GET,
                "/projects/demo/plan?q=script",
                Some(&s.admin_token.clone()),
            )
            .send()
            .await
            .map(|r| (r.status().as_u16(), r))
            .unwrap();
        assert_eq!(st, 200);
        {
            let html = page.text().await.unwrap();
            assert!(
                html.contains("action=\"/api/v1/projects/demo/items.csv\""),
                "{html}"
            );
            assert!(html.contains("&#60;script&#62;alert(1)"), "{html}");
            assert!(!html.contains("<script>alert(1)"));
        }
        let only_script = export(&s, "script").await;
        assert_eq!(only_script.lines().count(), 1 + 2, "{only_script}");

        // Import the export again: two more items, same fields.
        let (st, body) = import(&s, &text, false).await;
        assert_eq!(st, 201, "{body}");
        let all = items(&s).await;
        assert_eq!(all.len(), 4);
        let copies: Vec<&Value> = all
            .iter()
            .filter(|i| i["title"] == "<script>alert(1)</script>")
            .collect();
        assert_eq!(copies.len(), 2);
        assert_eq!(copies[1]["description"], "line one\nline \"two\", end");
        assert_eq!(copies[1]["labels"], json!(["a", "b"]));
        assert_eq!(copies[1]["estimate"], 5);
        s.stop().await;
    }
}
