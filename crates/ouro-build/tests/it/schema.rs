//! docs/pipeline.schema.json is generated from the model types and committed; this test fails
//! when it drifts and rewrites it with `OURO_BLESS=1`.

use std::path::PathBuf;

#[test]
fn committed_json_schema_matches_the_types() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/pipeline.schema.json");
    let generated =
        serde_json::to_string_pretty(&ouro_build::pipeline::json_schema()).unwrap() + "\n";
    if std::env::var_os("OURO_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/pipeline.schema.json is out of date; run `OURO_BLESS=1 cargo test -p ouro-build --test it schema::`"
    );
}

#[test]
fn schema_describes_the_keys_editors_complete() {
    let s = ouro_build::pipeline::json_schema();
    assert_eq!(s["additionalProperties"], false);
    let job = &s["definitions"]["Job"]["properties"];
    for key in [
        "needs",
        "if",
        "runs-on",
        "strategy",
        "timeout-minutes",
        "continue-on-error",
        "concurrency",
        "environment",
        "cache",
        "artifacts",
        "steps",
    ] {
        assert!(job.get(key).is_some(), "Job.{key} missing from the schema");
    }
    let step = &s["definitions"]["Step"]["properties"];
    assert!(step.get("working-directory").is_some() && step.get("uses").is_none());
    assert_eq!(
        s["definitions"]["Job"]["properties"]["timeout-minutes"]["maximum"],
        10080
    );
}

#[test]
fn every_diagnostic_code_is_documented() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/pipelines.md");
    let doc = std::fs::read_to_string(path).unwrap();
    for (code, _) in ouro_build::diag::CODES {
        assert!(
            doc.contains(&format!("| `{code}` |")),
            "{code} is missing from the diagnostics table of docs/pipelines.md"
        );
    }
}
