//! The "Run pipeline" page (`ui::pipeline_run`): the manual pipelines of a repository at a ref,
//! a typed field per input, a refused value shown by its field (422), a good form starting the
//! run with typed inputs; viewers cannot open it.

use crate::code_hosting::{app_checkout, member};
use crate::support::*;
use reqwest::Method;

const MANUAL: &str = "name: Deploy
on:
  manual:
    inputs:
      level:
        type: choice
        options: [low, high]
        default: low
      count:
        type: number
        default: 1
      dry:
        type: boolean
        default: true
      note:
        description: Why this deploy
        required: true
jobs:
  go:
    steps:
      - run: echo go
";

#[tokio::test]
async fn the_run_pipeline_form_renders_typed_inputs_refuses_bad_values_and_starts_runs() {
    for db in backends() {
        let s = TestServer::start(&db).await;
        s.demo_project().await;
        let viewer = member(&s, "viewer", "viewer").await;
        let (git, work, _) = app_checkout(&s).await;
        std::fs::create_dir_all(work.join(".ouro/pipelines")).unwrap();
        git.commit(&work, ".ouro/pipelines/deploy.yml", MANUAL, "Deploy")
            .await;
        git.run(&work, &["push", "-q", "origin", "main"]).await;

        let (st, html) = s.admin_page("/projects/demo/pipelines").await;
        assert_eq!(st, 200);
        assert!(html.contains("id=\"run-pipeline-link\""), "{html}");
        let page = "/projects/demo/pipelines/run";
        let (st, html) = s.admin_page(page).await;
        assert_eq!(st, 200, "{html}");
        assert!(html.contains("<strong>Deploy</strong>"), "{html}");
        assert!(html.contains("<select id=\"input-level\""), "{html}");
        assert!(
            html.contains("<option value=\"high\">high</option>"),
            "{html}"
        );
        assert!(html.contains("id=\"input-count\""), "{html}");
        assert!(
            html.contains("name=\"type.count\" value=\"number\""),
            "{html}"
        );
        assert!(html.contains("<select id=\"input-dry\""), "{html}");
        assert!(html.contains("note (required)"), "{html}");
        assert!(html.contains("Why this deploy"), "{html}");
        let r = s
            .req(Method::GET, page, Some(&viewer))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "viewers cannot start runs");

        // A choice outside its options comes back on the form, by the field.
        let form = |level: &str, note: &str| {
            form_body(&[
                ("repo", "app"),
                ("ref", "main"),
                ("type.level", "choice"),
                ("input.level", level),
                ("type.count", "number"),
                ("input.count", "3"),
                ("type.dry", "boolean"),
                ("input.dry", "false"),
                ("type.note", "string"),
                ("input.note", note),
            ])
        };
        let (st, _, html) = s.admin_form(page, form("medium", "x")).await;
        assert_eq!(st, 422, "{html}");
        assert!(html.contains("id=\"input-level-error\""), "{html}");
        assert!(html.contains("aria-invalid=\"true\""), "{html}");
        // A required input left empty too.
        let (st, _, html) = s.admin_form(page, form("high", "")).await;
        assert_eq!(st, 422, "{html}");
        assert!(html.contains("id=\"input-note-error\""), "{html}");
        // An unknown ref is refused on the form, not a 500.
        let (st, _, html) = s
            .admin_form(
                page,
                form_body(&[("repo", "app"), ("ref", "nope"), ("input.note", "x")]),
            )
            .await;
        assert_eq!(st, 422, "{html}");
        assert!(html.contains("id=\"run-error\""), "{html}");

        // A good form starts the run with typed inputs and goes to it.
        let (st, location, body) = s.admin_form(page, form("high", "ship it")).await;
        assert_eq!(st, 303, "{body}");
        assert_eq!(location, "/projects/demo/pipelines/1");
        let (st, run) = s
            .admin(Method::GET, "/api/v1/projects/demo/pipelines/1", None)
            .await;
        assert_eq!(st, 200, "{run}");
        assert_eq!(run["trigger"], "manual", "{run}");
        assert_eq!(run["inputs"]["level"], "high", "{run}");
        assert_eq!(run["inputs"]["count"].as_f64(), Some(3.0), "{run}");
        assert_eq!(run["inputs"]["dry"], false, "{run}");
        assert_eq!(run["inputs"]["note"], "ship it", "{run}");
        s.stop().await;
    }
}
