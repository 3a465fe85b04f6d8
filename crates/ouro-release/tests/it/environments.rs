//! `.ouro/environments.yml`: the path order, defaults, and every problem with its position and
//! stable code.

use ouro_release::environments::{self, Check};

const FILE: &str = ".ouro/environments.yml";

fn errors(text: &str) -> Vec<String> {
    environments::parse(FILE, text)
        .expect_err("must be refused")
        .iter()
        .map(|d| d.one_line())
        .collect()
}

#[test]
fn a_full_path_parses_in_order_with_defaults() {
    let text = r#"environments:
  dev: {}
  staging:
    wait: 10m
    approvals: {required: 2, from: [maintainers, alice], no-self-approval: true}
    windows: [{cron: "* 9-17 * * 1-5", timezone: "Europe/Paris"}]
    freeze: [{cron: "* * 24-26 12 *"}]
    checks: [tests-passed, quality-gate]
  production:
    after: staging
"#;
    let c = environments::parse(FILE, text).unwrap();
    let names: Vec<&str> = c.environments.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["dev", "staging", "production"]);
    let dev = c.get("dev").unwrap();
    assert_eq!(dev.after, None);
    assert!(dev.approvals.is_none());
    let st = c.get("staging").unwrap();
    assert_eq!(
        st.after.as_deref(),
        Some("dev"),
        "default: the previous entry"
    );
    assert_eq!(st.wait_secs, Some(600));
    let a = st.approvals.as_ref().unwrap();
    assert_eq!(a.required, 2);
    assert_eq!(a.from, ["maintainers", "alice"]);
    assert!(a.no_self_approval);
    assert_eq!(st.windows[0].timezone, "Europe/Paris");
    assert_eq!(st.freeze[0].timezone, "UTC", "default zone");
    assert_eq!(st.checks, [Check::TestsPassed, Check::QualityGate]);
}

#[test]
fn after_reorders_the_path() {
    let text = "environments:\n  production:\n    after: staging\n  staging:\n    after: dev\n  dev:\n    after: null\n";
    let c = environments::parse(FILE, text).unwrap();
    let names: Vec<&str> = c.environments.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["dev", "staging", "production"]);
}

#[test]
fn unknown_keys_get_a_suggestion_with_their_position() {
    let text = "environments:\n  dev: {}\n  staging:\n    aprovals: {required: 1}\n";
    let ds = environments::parse(FILE, text).unwrap_err();
    assert_eq!(ds.len(), 1);
    assert_eq!(
        ds[0].one_line(),
        ".ouro/environments.yml:4:5: error[release.env_unknown_key]: unknown key `aprovals` in environment `staging`"
    );
    assert_eq!(ds[0].help.as_deref(), Some("did you mean `approvals`?"));
}

#[test]
fn duplicate_keys_are_refused() {
    let e = errors("environments:\n  dev: {}\n  dev: {}\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with(".ouro/environments.yml:3:"), "{e:?}");
    assert!(e[0].contains("error[release.env_duplicate_key]"), "{e:?}");
}

#[test]
fn unknown_and_cyclic_after_are_refused() {
    let e = errors("environments:\n  dev: {}\n  staging:\n    after: stagin\n");
    assert_eq!(
        e,
        [
            ".ouro/environments.yml:4:12: error[release.env_unknown_after]: `after: stagin` names no environment"
        ]
    );
    let e = errors("environments:\n  a:\n    after: b\n  b:\n    after: a\n");
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e.iter().all(|l| l.contains("error[release.env_cycle]")),
        "{e:?}"
    );
    assert!(e[0].starts_with(".ouro/environments.yml:3:12:"), "{e:?}");
}

#[test]
fn bad_cron_time_zone_duration_check_and_required_are_reported_together() {
    let text = r#"environments:
  prod:
    wait: soon
    approvals: {required: 0}
    windows: [{cron: "* 25 * * *", timezone: "Mars/Olympus"}]
    checks: [tests-pased]
"#;
    let e = errors(text);
    let codes: Vec<&str> = e
        .iter()
        .map(|l| l.split("error[").nth(1).unwrap().split(']').next().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "release.env_bad_duration",
            "release.env_invalid_value",
            "release.env_bad_cron",
            "release.env_unknown_timezone",
            "release.env_unknown_check"
        ],
        "{e:?}"
    );
    assert!(e[0].starts_with(".ouro/environments.yml:3:11:"), "{e:?}");
    assert!(e[3].starts_with(".ouro/environments.yml:5:46:"), "{e:?}");
}

#[test]
fn empty_files_bad_names_and_syntax_errors_are_refused() {
    assert!(errors("{}\n")[0].contains("release.env_empty"));
    assert!(errors("environments: {}\n")[0].contains("release.env_empty"));
    assert!(errors("environments:\n  Prod: {}\n")[0].contains("release.env_invalid_name"));
    assert!(errors("environments: [\n")[0].contains("release.env_syntax"));
    assert!(errors("environments:\n  dev: []\n")[0].contains("release.env_invalid_type"));
}
