//! Valid files parse into the expected model.

use std::collections::BTreeMap;

use ouro_build::pipeline::*;

use crate::fixture;

#[test]
fn full_featured_pipeline_parses_into_the_model() {
    let p = match parse("full.yml", &fixture("full.yml")) {
        Ok(p) => p,
        Err(d) => panic!("{:#?}", d),
    };
    assert_eq!(p.name.as_deref(), Some("CI"));
    let t = p.triggers();
    let push = t.push.unwrap();
    assert_eq!(push.branches, ["main", "release/**", "!release/old"]);
    assert_eq!(push.tags, ["v*"]);
    assert_eq!(push.paths, ["src/**", "!docs/**"]);
    assert_eq!(t.change_request.unwrap().branches, ["main"]);
    let crons: Vec<&str> = t.schedule.iter().map(Schedule::cron).collect();
    assert_eq!(crons, ["0 3 * * MON-FRI", "0 0 L * *"]);
    let inputs = t.manual.unwrap().inputs;
    assert_eq!(inputs["target"].kind, InputType::Choice);
    assert_eq!(inputs["target"].options, ["staging", "production"]);
    assert_eq!(
        inputs["target"].default,
        Some(EnvValue::String("staging".into()))
    );
    assert!(inputs["target"].required);
    assert_eq!(inputs["dry_run"].kind, InputType::Boolean);
    assert_eq!(inputs["dry_run"].default, Some(EnvValue::Bool(false)));
    assert_eq!(inputs["count"].default, Some(EnvValue::Int(3)));
    assert_eq!(p.env["CARGO_TERM_COLOR"], EnvValue::String("always".into()));
    assert_eq!(p.env["RETRIES"].to_string(), "3");

    let test = &p.jobs["test"];
    assert_eq!(test.name.as_deref(), Some("Test ${{ matrix.os }}"));
    assert_eq!(test.runs_on.to_vec(), ["linux", "x64"]);
    let m = &test.strategy.as_ref().unwrap().matrix;
    assert_eq!(
        m.axes["os"],
        [serde_json::json!("debian"), serde_json::json!("alpine")]
    );
    assert_eq!(m.axes["rust"][1], serde_json::json!("1.85"));
    assert_eq!(m.exclude.len(), 1);
    assert_eq!(m.include[0]["rust"], serde_json::json!("nightly"));
    assert_eq!(test.timeout_minutes, Some(30.0));
    let retry = test.retry.as_ref().unwrap();
    assert_eq!(
        (retry.max, retry.when.as_slice()),
        (2, &[RetryWhen::InfraFailure][..])
    );
    assert!(!test.continue_on_error);
    assert_eq!(
        test.concurrency,
        Some(Concurrency::Detailed(ConcurrencyGroup {
            group: "test-${{ ouro.ref }}".into(),
            cancel_in_progress: true
        }))
    );
    let cache = test.cache.as_ref().unwrap();
    assert_eq!(cache.paths, ["target", "~/.cargo/registry"]);
    assert_eq!(cache.restore_keys, ["cargo-"]);
    let art = test.artifacts.as_ref().unwrap();
    assert_eq!(art.expire_in.as_deref(), Some("7 days"));
    let reports = art.reports.as_ref().unwrap();
    assert_eq!(reports.junit, ["target/junit.xml"]);
    assert_eq!(reports.coverage.as_deref(), Some("target/cobertura.xml"));
    assert_eq!(test.steps.len(), 2);
    let s = &test.steps[0];
    assert_eq!(
        (s.name.as_deref(), s.run.as_str(), s.shell.as_deref()),
        (Some("Build"), "cargo build", Some("bash"))
    );
    assert_eq!(s.working_directory.as_deref(), Some("app"));
    assert_eq!(
        s.env,
        BTreeMap::from([("DEBUG".to_string(), EnvValue::Int(1))])
    );
    assert_eq!(s.if_.as_deref(), Some("success()"));
    assert_eq!(s.timeout_minutes, Some(10.0));

    let deploy = &p.jobs["deploy"];
    assert_eq!(deploy.needs.to_vec(), ["test"]);
    assert_eq!(deploy.if_.as_deref(), Some("ouro.branch == 'main'"));
    assert_eq!(deploy.runs_on.to_vec(), ["linux"]);
    assert_eq!(
        deploy.concurrency,
        Some(Concurrency::Group("deploy".into()))
    );
    assert_eq!(deploy.environment.as_deref(), Some("production"));
    // Defaults of omitted keys.
    assert_eq!(deploy.retry, None);
    assert!(deploy.env.is_empty());
}

#[test]
fn on_is_a_string_key_and_the_short_forms_work() {
    let p = parse(
        "a.yml",
        b"on: push\njobs:\n  a:\n    steps: [{run: 'true'}]\n",
    )
    .unwrap();
    assert_eq!(p.on, Some(On::Event(EventName::Push)));
    let t = p.triggers();
    assert!(t.push.is_some() && t.change_request.is_none() && t.manual.is_none());

    let p = parse(
        "a.yml",
        b"on: [push, change_request, manual]\njobs:\n  a:\n    steps: [{run: 'true'}]\n",
    )
    .unwrap();
    let t = p.triggers();
    assert!(t.push.is_some() && t.change_request.is_some() && t.manual.is_some());

    // An empty `push:` means every branch; no `on:` means push and change request.
    let p = parse(
        "a.yml",
        b"on:\n  push:\n  manual:\njobs:\n  a:\n    steps: [{run: 'true'}]\n",
    )
    .unwrap();
    assert_eq!(p.triggers().push, Some(PushTrigger::default()));
    assert!(p.triggers().manual.is_some());
    let p = parse("a.yml", b"jobs:\n  a:\n    steps: [{run: 'true'}]\n").unwrap();
    assert!(p.triggers().push.is_some() && p.triggers().change_request.is_some());
}

#[test]
fn anchors_and_aliases_work() {
    let yaml = b"
jobs:
  a:
    env: &common
      A: one
      B: two
    steps:
      - &build {name: build, run: make}
  b:
    env: *common
    needs: a
    steps:
      - *build
      - run: make test
";
    let p = parse("a.yml", yaml).unwrap();
    assert_eq!(p.jobs["b"].env, p.jobs["a"].env);
    assert_eq!(p.jobs["b"].env["B"], EnvValue::String("two".into()));
    assert_eq!(p.jobs["b"].steps[0], p.jobs["a"].steps[0]);
    assert_eq!(p.jobs["b"].steps[1].run, "make test");
}

#[test]
fn yaml_1_2_scalars_stay_strings() {
    // YAML 1.1 would read `on`, `yes` and `no` as booleans; YAML 1.2 core keeps them strings.
    let p = parse(
        "a.yml",
        b"on: push\nenv:\n  A: yes\n  B: no\n  C: 'true'\n  D: true\njobs:\n  a:\n    steps: [{run: 'true'}]\n",
    )
    .unwrap();
    assert_eq!(p.env["A"], EnvValue::String("yes".into()));
    assert_eq!(p.env["B"], EnvValue::String("no".into()));
    assert_eq!(p.env["C"], EnvValue::String("true".into()));
    assert_eq!(p.env["D"], EnvValue::Bool(true));
}

#[test]
fn timeout_minutes_takes_fractions_within_its_range() {
    let p = ouro_build::parse(
        "ci.yml",
        b"jobs:\n  a:\n    timeout-minutes: 0.5\n    steps:\n      - run: x\n        timeout-minutes: 1.25\n",
    )
    .unwrap();
    let a = &p.jobs["a"];
    assert_eq!(a.timeout_minutes, Some(0.5));
    assert_eq!(a.steps[0].timeout_minutes, Some(1.25));
    assert_eq!(
        ouro_build::pipeline::minutes(0.5),
        std::time::Duration::from_secs(30)
    );
    assert_eq!(
        ouro_build::pipeline::minutes(1.25),
        std::time::Duration::from_secs(75)
    );
    assert_eq!(
        ouro_build::pipeline::minutes(0.01),
        std::time::Duration::from_millis(600)
    );
    for bad in ["0", "0.001", "-1", "10080.5", "99999"] {
        let y = format!("jobs:\n  a:\n    timeout-minutes: {bad}\n    steps:\n      - run: x\n");
        let d = ouro_build::lint("ci.yml", y.as_bytes());
        assert!(
            d.iter().any(|d| d.code == ouro_build::diag::OUT_OF_RANGE),
            "{bad}: {d:?}"
        );
        let msg = &d
            .iter()
            .find(|d| d.code == ouro_build::diag::OUT_OF_RANGE)
            .unwrap()
            .message;
        assert!(msg.contains("0.01") && msg.contains("10080"), "{msg}");
    }
    let d = ouro_build::lint(
        "ci.yml",
        b"jobs:\n  a:\n    timeout-minutes: 10080\n    steps:\n      - run: x\n        timeout-minutes: 0.01\n",
    );
    assert!(d.is_empty(), "{d:?}");
}
