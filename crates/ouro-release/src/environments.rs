//! The promotion path: `.ouro/environments.yml` at a release's commit (or the same YAML kept in the
//! project settings, `release_environment_settings`), parsed with positions through Build's YAML
//! node tree so that every problem is reported as `FILE:LINE:COL: error[release.env_*]: message`.
//!
//! ```yaml
//! environments:
//!   dev: {}
//!   staging:
//!     after: dev            # the environment in front; default: the previous entry
//!     wait: 10m             # after the one in front succeeded
//!     approvals: {required: 1, from: [maintainers], no-self-approval: true}
//!     windows: [{cron: "* 9-17 * * 1-5", timezone: "Europe/Paris"}]
//!     freeze: [{cron: "* * 24-26 12 *", timezone: "UTC"}]
//!     checks: [tests-passed, quality-gate]
//! ```
//!
//! Time zones are IANA names resolved by jiff from the system tz database; cron expressions are
//! croner's (5 fields, or 6 with seconds first) matched against the wall clock of that zone.

use std::collections::{BTreeMap, BTreeSet};

use ouro_build::Diagnostic;
use ouro_build::diag::did_you_mean;
use ouro_build::yaml::{self, Node, V};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the promotion path is read from in a repository.
pub const FILE: &str = ".ouro/environments.yml";
/// The name used in diagnostics for the copy kept in the project settings.
pub const SETTINGS_FILE: &str = "project settings (environments)";
/// At most this many environments in a path.
pub const MAX_ENVIRONMENTS: usize = 32;
/// At most this many bytes in the file.
pub const MAX_BYTES: usize = 64 * 1024;

pub const ENV_SYNTAX: &str = "release.env_syntax";
pub const ENV_DUPLICATE_KEY: &str = "release.env_duplicate_key";
pub const ENV_UNKNOWN_KEY: &str = "release.env_unknown_key";
pub const ENV_INVALID_TYPE: &str = "release.env_invalid_type";
pub const ENV_INVALID_VALUE: &str = "release.env_invalid_value";
pub const ENV_INVALID_NAME: &str = "release.env_invalid_name";
pub const ENV_UNKNOWN_AFTER: &str = "release.env_unknown_after";
pub const ENV_CYCLE: &str = "release.env_cycle";
pub const ENV_BAD_CRON: &str = "release.env_bad_cron";
pub const ENV_UNKNOWN_TIMEZONE: &str = "release.env_unknown_timezone";
pub const ENV_BAD_DURATION: &str = "release.env_bad_duration";
pub const ENV_UNKNOWN_CHECK: &str = "release.env_unknown_check";
pub const ENV_EMPTY: &str = "release.env_empty";

/// Every diagnostic code of the environments file with what it means (docs/environments.md).
pub const CODES: &[(&str, &str)] = &[
    (
        ENV_SYNTAX,
        "the file is not valid YAML, is too large or exceeds a parsing budget",
    ),
    (ENV_DUPLICATE_KEY, "a key appears twice in one mapping"),
    (
        ENV_UNKNOWN_KEY,
        "a key that is not allowed there (with a \"did you mean\" suggestion)",
    ),
    (
        ENV_INVALID_TYPE,
        "a value of the wrong type (a list where a mapping is expected, ...)",
    ),
    (
        ENV_INVALID_VALUE,
        "a value out of range (`required: 0`, more than 32 environments, ...)",
    ),
    (
        ENV_INVALID_NAME,
        "an environment name that is not lowercase letters, digits, `-` or `_`",
    ),
    (
        ENV_UNKNOWN_AFTER,
        "`after` names an environment that does not exist",
    ),
    (ENV_CYCLE, "`after` makes a cycle"),
    (
        ENV_BAD_CRON,
        "a window or freeze `cron` that does not parse",
    ),
    (
        ENV_UNKNOWN_TIMEZONE,
        "a `timezone` that is not in the tz database",
    ),
    (
        ENV_BAD_DURATION,
        "a `wait` that is not a duration like `10m`, `2h`, `1d`",
    ),
    (
        ENV_UNKNOWN_CHECK,
        "a check other than `tests-passed` and `quality-gate`",
    ),
    (ENV_EMPTY, "no `environments` mapping, or an empty one"),
];

/// A parsed promotion path: environments in path order (each after the one it names).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Config {
    pub environments: Vec<Environment>,
}

/// One environment and its gates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Environment {
    pub name: String,
    /// The environment in front of this one (none: the first).
    pub after: Option<String>,
    /// Seconds to wait after the environment in front succeeded.
    pub wait_secs: Option<u64>,
    pub approvals: Option<Approvals>,
    /// Promotion only inside one of these (none: any time).
    pub windows: Vec<Schedule>,
    /// Never inside one of these.
    pub freeze: Vec<Schedule>,
    pub checks: Vec<Check>,
}

/// Required approvals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Approvals {
    pub required: u32,
    /// Groups (`maintainers`: members with at least that role; `developers`, `owners`,
    /// `viewers`) and user names.
    pub from: Vec<String>,
    /// The requester and the release's publisher may not approve.
    pub no_self_approval: bool,
}

/// A cron schedule (minutes it matches) in a time zone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Schedule {
    pub cron: String,
    pub timezone: String,
}

/// A required check on the release's pipeline run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// No failed or errored test in the release's run.
    TestsPassed,
    /// Every quality gate of the release's run passed.
    QualityGate,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::TestsPassed => "tests-passed",
            Check::QualityGate => "quality-gate",
        }
    }
}

impl Config {
    pub fn get(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.name == name)
    }
}

/// The group names `approvals.from` accepts, with the smallest role each admits.
pub fn group_role(name: &str) -> Option<ouro_core::Role> {
    use ouro_core::Role;
    match name {
        "viewers" => Some(Role::Viewer),
        "developers" => Some(Role::Developer),
        "maintainers" => Some(Role::Maintainer),
        "owners" => Some(Role::Owner),
        _ => None,
    }
}

/// Parses a cron expression as windows and freezes use it (seconds optional).
pub fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(text)
        .map_err(|e| e.to_string())
}

/// Resolves an IANA time zone name from the tz database.
pub fn time_zone(name: &str) -> Option<jiff::tz::TimeZone> {
    jiff::tz::TimeZone::get(name).ok()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Build's YAML codes renamed into this file's namespace.
fn rename(mut d: Diagnostic) -> Diagnostic {
    d.code = match d.code {
        ouro_build::diag::DUPLICATE_KEY => ENV_DUPLICATE_KEY,
        _ => ENV_SYNTAX,
    };
    d
}

struct Checker<'a> {
    file: &'a str,
    diags: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn err(&mut self, node: &Node, code: &'static str, message: String) -> &mut Diagnostic {
        self.diags.push(node.diag(self.file, code, message));
        self.diags.last_mut().expect("just pushed")
    }

    fn keys<'n>(
        &mut self,
        node: &'n Node,
        allowed: &[&str],
        what: &str,
    ) -> Vec<(String, &'n Node)> {
        let codes = (ENV_UNKNOWN_KEY, ENV_INVALID_TYPE);
        node.allowed_entries(self.file, allowed, what, codes, &mut self.diags)
    }

    fn schedules(&mut self, node: &Node, what: &str) -> Vec<Schedule> {
        let Some(items) = node.seq() else {
            let m = format!(
                "`{what}` must be a list of {{cron, timezone}}, not {}",
                node.describe()
            );
            self.err(node, ENV_INVALID_TYPE, m);
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let entries = self.keys(item, &["cron", "timezone"], &format!("a `{what}` entry"));
            let mut cron = None;
            let mut tz = "UTC".to_string();
            for (k, v) in entries {
                let Some(text) = v.as_str() else {
                    let m = format!("`{k}` must be a string, not {}", v.describe());
                    self.err(v, ENV_INVALID_TYPE, m);
                    continue;
                };
                if k == "cron" {
                    match parse_cron(text) {
                        Ok(_) => cron = Some(text.to_string()),
                        Err(e) => {
                            self.err(v, ENV_BAD_CRON, format!("invalid cron `{text}`: {e}"))
                                .help = Some(
                                "5 fields (minute hour day-of-month month day-of-week), e.g. `* 9-17 * * 1-5`"
                                    .into(),
                            );
                        }
                    }
                } else if time_zone(text).is_some() {
                    tz = text.to_string();
                } else {
                    self.err(
                        v,
                        ENV_UNKNOWN_TIMEZONE,
                        format!("unknown time zone `{text}`"),
                    )
                    .help = Some("an IANA name such as `UTC` or `Europe/Paris`".into());
                }
            }
            if item
                .map()
                .is_some_and(|m| !m.iter().any(|(k, _)| k.as_str() == Some("cron")))
            {
                self.err(
                    item,
                    ENV_INVALID_VALUE,
                    format!("a `{what}` entry needs `cron`"),
                );
            }
            if let Some(cron) = cron {
                out.push(Schedule { cron, timezone: tz });
            }
        }
        out
    }

    fn approvals(&mut self, node: &Node) -> Option<Approvals> {
        let entries = self.keys(
            node,
            &["required", "from", "no-self-approval"],
            "`approvals`",
        );
        let mut a = Approvals {
            required: 1,
            from: vec!["maintainers".into()],
            no_self_approval: false,
        };
        for (k, v) in entries {
            match k.as_str() {
                "required" => match v.v {
                    V::Int(n) if (1..=20).contains(&n) => a.required = n as u32,
                    V::Int(_) => {
                        self.err(v, ENV_INVALID_VALUE, "`required` must be 1 to 20".into());
                    }
                    _ => {
                        let m = format!("`required` must be an integer, not {}", v.describe());
                        self.err(v, ENV_INVALID_TYPE, m);
                    }
                },
                "from" => {
                    let names = v.strings();
                    if names.is_empty() || (v.seq().is_none() && v.as_str().is_none()) {
                        let m = "`from` must be a group (`maintainers`) or a list of groups and user names".to_string();
                        self.err(v, ENV_INVALID_TYPE, m);
                    } else {
                        a.from = names.into_iter().map(|(s, _)| s).collect();
                    }
                }
                _ => match v.v {
                    V::Bool(b) => a.no_self_approval = b,
                    _ => {
                        let m = format!(
                            "`no-self-approval` must be true or false, not {}",
                            v.describe()
                        );
                        self.err(v, ENV_INVALID_TYPE, m);
                    }
                },
            }
        }
        Some(a)
    }

    fn environment(
        &mut self,
        name: &str,
        key: &Node,
        node: &Node,
        previous: Option<&str>,
    ) -> Environment {
        let mut env = Environment {
            name: name.to_string(),
            after: previous.map(str::to_string),
            ..Default::default()
        };
        if !valid_name(name) {
            self.err(
                key,
                ENV_INVALID_NAME,
                format!("invalid environment name `{name}`: lowercase letters, digits, `-` and `_`, at most 64"),
            );
        }
        let allowed = ["after", "wait", "approvals", "windows", "freeze", "checks"];
        for (k, v) in self.keys(node, &allowed, &format!("environment `{name}`")) {
            match k.as_str() {
                "after" => match v.as_str() {
                    Some(a) => env.after = Some(a.to_string()),
                    None if matches!(v.v, V::Null) => env.after = None,
                    None => {
                        let m =
                            format!("`after` must be an environment name, not {}", v.describe());
                        self.err(v, ENV_INVALID_TYPE, m);
                    }
                },
                "wait" => {
                    let text = v.scalar_text().unwrap_or_default();
                    match ouro_build::check::parse_duration(&text) {
                        Some(s) => env.wait_secs = Some(s),
                        None => {
                            self.err(v, ENV_BAD_DURATION, format!("invalid duration `{text}`"))
                                .help = Some("a number and a unit: `30m`, `2h`, `1d`, `1w`".into());
                        }
                    }
                }
                "approvals" => env.approvals = self.approvals(v),
                "windows" => env.windows = self.schedules(v, "windows"),
                "freeze" => env.freeze = self.schedules(v, "freeze"),
                _ => {
                    let items: Vec<&Node> = match &v.v {
                        V::Seq(items) => items.iter().collect(),
                        _ => {
                            let m = format!("`checks` must be a list, not {}", v.describe());
                            self.err(v, ENV_INVALID_TYPE, m);
                            Vec::new()
                        }
                    };
                    for item in items {
                        match item.as_str() {
                            Some("tests-passed") => env.checks.push(Check::TestsPassed),
                            Some("quality-gate") => env.checks.push(Check::QualityGate),
                            other => {
                                let t = other
                                    .map(str::to_string)
                                    .unwrap_or_else(|| item.describe().into());
                                let d = self.err(
                                    item,
                                    ENV_UNKNOWN_CHECK,
                                    format!("unknown check `{t}`"),
                                );
                                d.help = Some(
                                    match did_you_mean(&t, &["tests-passed", "quality-gate"]) {
                                        Some(m) => format!("did you mean `{m}`?"),
                                        None => {
                                            "checks are `tests-passed` and `quality-gate`".into()
                                        }
                                    },
                                );
                            }
                        }
                    }
                }
            }
        }
        env
    }
}

/// Parses an environments file. `file` names it in diagnostics. On success the environments are in
/// path order: an environment comes after the one it names in `after`.
pub fn parse(file: &str, text: &str) -> Result<Config, Vec<Diagnostic>> {
    if text.len() > MAX_BYTES {
        return Err(vec![Diagnostic::error(
            file,
            1,
            1,
            ENV_SYNTAX,
            format!("the file has {} bytes; at most {MAX_BYTES}", text.len()),
        )]);
    }
    let root =
        yaml::read(file, text).map_err(|ds| ds.into_iter().map(rename).collect::<Vec<_>>())?;
    let mut c = Checker {
        file,
        diags: Vec::new(),
    };
    let top = c.keys(&root, &["environments"], "the file");
    let Some((_, envs)) = top.into_iter().next() else {
        c.err(
            &root,
            ENV_EMPTY,
            "the file needs an `environments` mapping".into(),
        )
        .help = Some("environments:\n  dev: {}\n  staging:\n    after: dev".into());
        return Err(c.diags);
    };
    let Some(map) = envs.map().filter(|m| !m.is_empty()) else {
        let m = format!(
            "`environments` must be a non-empty mapping, not {}",
            envs.describe()
        );
        c.err(envs, ENV_EMPTY, m);
        return Err(c.diags);
    };
    if map.len() > MAX_ENVIRONMENTS {
        c.err(
            envs,
            ENV_INVALID_VALUE,
            format!("{} environments; at most {MAX_ENVIRONMENTS}", map.len()),
        );
    }
    let mut list: Vec<(Environment, &Node)> = Vec::new();
    let mut previous: Option<String> = None;
    for (k, v) in map {
        let name = k.scalar_text().unwrap_or_default();
        let env = c.environment(&name, k, v, previous.as_deref());
        let after_node = v.get("after").unwrap_or(k);
        list.push((env, after_node));
        previous = Some(name);
    }
    let names: Vec<&str> = list.iter().map(|(e, _)| e.name.as_str()).collect();
    for (e, node) in &list {
        if let Some(a) = &e.after
            && !names.contains(&a.as_str())
        {
            let d = c.err(
                node,
                ENV_UNKNOWN_AFTER,
                format!("`after: {a}` names no environment"),
            );
            d.help = Some(match did_you_mean(a, &names) {
                Some(m) => format!("did you mean `{m}`?"),
                None => format!("environments: {}", names.join(", ")),
            });
        }
    }
    // Order: each environment after its `after`; what remains is a cycle.
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut order: Vec<Environment> = Vec::new();
    loop {
        let before = order.len();
        for (e, _) in &list {
            if placed.contains(&e.name) {
                continue;
            }
            let ready = match &e.after {
                None => true,
                Some(a) => placed.contains(a) || !names.contains(&a.as_str()),
            };
            if ready {
                placed.insert(e.name.clone());
                order.push(e.clone());
            }
        }
        if order.len() == before {
            break;
        }
    }
    let mut reported: BTreeMap<String, ()> = BTreeMap::new();
    for (e, node) in &list {
        if !placed.contains(&e.name) && reported.insert(e.name.clone(), ()).is_none() {
            let d = c.err(
                node,
                ENV_CYCLE,
                format!("`after` of `{}` makes a cycle", e.name),
            );
            d.help = Some("the promotion path must start at an environment without `after`".into());
        }
    }
    if c.diags.is_empty() {
        Ok(Config {
            environments: order,
        })
    } else {
        c.diags.sort_by_key(|d| (d.line, d.col));
        Err(c.diags)
    }
}
