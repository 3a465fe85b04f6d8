//! Generated files are committed so people can read them without running Ouro; these tests fail
//! when a file no longer matches what the code generates. Run with `OURO_BLESS=1` to rewrite them.

use crate::support::*;
use reqwest::Method;

const START: &str = "<!-- generated:start -->\n";
const END: &str = "<!-- generated:end -->";

/// Compares a generated file, or the generated part of a hand-written one (between the markers).
fn check(rel: &str, generated: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let expected = match (committed.find(START), committed.find(END)) {
        (Some(a), Some(b)) if a < b => format!(
            "{}{generated}{}",
            &committed[..a + START.len()],
            &committed[b..]
        ),
        _ => generated.to_string(),
    };
    if std::env::var("OURO_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &expected).unwrap();
        return;
    }
    assert!(
        committed == expected,
        "{rel} is out of date with the code. Regenerate it with: OURO_BLESS=1 cargo test -p ouro-server --test it drift::"
    );
}

#[tokio::test]
async fn openapi_document_matches_docs_openapi_json() {
    let s = TestServer::start(&backends()[0]).await;
    let (st, doc) = s
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/projects"]["post"]["requestBody"].is_object());
    assert_eq!(
        doc["paths"]["/api/v1/projects/{slug}"]["get"]["x-ouro-permission"],
        "project:viewer"
    );
    check(
        "docs/openapi.json",
        &(serde_json::to_string_pretty(&doc).unwrap() + "\n"),
    );
    s.stop().await;
}

#[test]
fn event_kinds_match_docs_events_md() {
    check("docs/events.md", &ouro_core::events::markdown_table());
}

#[test]
fn error_codes_match_docs_errors_md() {
    check("docs/errors.md", &ouro_core::error::markdown_table());
}
