//! Release notes in Markdown, generated from a release's commits, the work items they mention,
//! the change requests merged and the contributors.
//!
//! The layout is a minijinja template: [`DEFAULT_TEMPLATE`] unless the project has its own. Both
//! see the same variables (docs/releases.md lists them). Templates run sandboxed: no file access,
//! a fuel budget (so a template loop ends), a cap on the output size, strict undefined variables;
//! every failure is a `release.template_invalid` (422) with the line, never a panic.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use ouro_core::{ErrorCode, OuroError};
use schemars::JsonSchema;
use semver::Version;
use serde::{Deserialize, Serialize};

use crate::changes::Commit;

/// The built-in layout.
pub const DEFAULT_TEMPLATE: &str = include_str!("notes_default.md.j2");

/// Largest notes a template may produce.
pub const MAX_OUTPUT_BYTES: usize = 8 << 20;

/// Largest template text accepted.
pub const MAX_TEMPLATE_BYTES: usize = 64 << 10;

/// A work item mentioned by the release's commits, with its title.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ItemRef {
    pub key: String,
    pub title: String,
}

/// A change request merged in the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CrRef {
    pub number: i64,
    pub title: String,
}

/// Everything the notes are made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotesInput {
    pub version: Version,
    /// The previous release's version, if any.
    pub previous: Option<Version>,
    /// The release date, `YYYY-MM-DD`.
    pub date: String,
    /// The commits since the previous release, oldest first ([`crate::changes::since`]).
    pub commits: Vec<Commit>,
    /// The items of [`collect_refs`] that exist, with their titles.
    pub items: Vec<ItemRef>,
    pub change_requests: Vec<CrRef>,
    /// Display names; [`contributors`] gives them from the commits.
    pub contributors: Vec<String>,
}

impl NotesInput {
    /// Notes input with the contributors taken from the commits and no items or CRs yet.
    pub fn new(
        version: Version,
        previous: Option<Version>,
        date: impl Into<String>,
        commits: Vec<Commit>,
    ) -> NotesInput {
        NotesInput {
            contributors: contributors(&commits),
            version,
            previous,
            date: date.into(),
            commits,
            items: Vec::new(),
            change_requests: Vec::new(),
        }
    }
}

/// The item keys the commits mention (`DEMO-42`, `fixes DEMO-7`), each once, in order of first
/// mention. Whether they name real items is for the caller to decide.
pub fn collect_refs(commits: &[Commit]) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut keys = Vec::new();
    for c in commits {
        for r in ouro_core::refs::parse(&c.message) {
            if seen.insert(r.key.clone()) {
                keys.push(r.key);
            }
        }
    }
    keys
}

/// The commit authors' names, each once, in order of their first commit.
pub fn contributors(commits: &[Commit]) -> Vec<String> {
    let mut seen = HashSet::new();
    commits
        .iter()
        .filter(|c| !c.author_name.trim().is_empty())
        .filter(|c| seen.insert(c.author_name.trim().to_string()))
        .map(|c| c.author_name.trim().to_string())
        .collect()
}

/// One commit as the template sees it.
#[derive(Debug, Clone, Serialize)]
struct Line<'a> {
    sha: &'a str,
    short: &'a str,
    kind: Option<&'a str>,
    scope: Option<&'a str>,
    description: &'a str,
    body: &'a str,
    breaking: bool,
    breaking_note: Option<&'a str>,
    author_name: &'a str,
    author_email: &'a str,
    message: &'a str,
    /// Keys of the release's items this commit mentions.
    items: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Section<'a> {
    /// `breaking`, a commit type (`feat`, `fix`, `chore`, ...) or `other`.
    kind: String,
    title: String,
    commits: Vec<Line<'a>>,
}

#[derive(Debug, Serialize)]
struct Context<'a> {
    version: String,
    previous: Option<String>,
    date: &'a str,
    sections: Vec<Section<'a>>,
    breaking: Vec<Line<'a>>,
    commits: Vec<Line<'a>>,
    items: &'a [ItemRef],
    change_requests: &'a [CrRef],
    contributors: &'a [String],
}

/// Known commit types in the order their sections appear, with their titles.
const KINDS: &[(&str, &str)] = &[
    ("feat", "Features"),
    ("fix", "Bug fixes"),
    ("perf", "Performance"),
    ("revert", "Reverts"),
    ("refactor", "Refactoring"),
    ("docs", "Documentation"),
    ("style", "Style"),
    ("test", "Tests"),
    ("build", "Build system"),
    ("ci", "Continuous integration"),
    ("chore", "Chores"),
];

/// The section title of a commit type: a known one, else the type itself capitalised.
pub fn section_title(kind: &str) -> String {
    if let Some((_, t)) = KINDS.iter().find(|(k, _)| *k == kind) {
        return t.to_string();
    }
    let mut c = kind.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn line<'a>(c: &'a Commit, known: &HashSet<&str>) -> Line<'a> {
    let mut items = Vec::new();
    if !known.is_empty() {
        for r in ouro_core::refs::parse(&c.message) {
            if known.contains(r.key.as_str()) && !items.contains(&r.key) {
                items.push(r.key);
            }
        }
    }
    let cc = &c.conventional;
    Line {
        sha: &c.sha,
        short: &c.short,
        kind: cc.kind.as_deref(),
        scope: cc.scope.as_deref(),
        description: &cc.description,
        body: &cc.body,
        breaking: cc.breaking,
        breaking_note: cc.breaking_note.as_deref(),
        author_name: &c.author_name,
        author_email: &c.author_email,
        message: &c.message,
        items,
    }
}

fn context(input: &NotesInput) -> Context<'_> {
    let known: HashSet<&str> = input.items.iter().map(|i| i.key.as_str()).collect();
    let commits: Vec<Line> = input.commits.iter().map(|c| line(c, &known)).collect();
    let breaking: Vec<Line> = commits.iter().filter(|l| l.breaking).cloned().collect();
    let mut by_kind: HashMap<&str, Vec<Line>> = HashMap::new();
    let mut other = Vec::new();
    for l in &commits {
        if l.breaking {
            continue;
        }
        match l.kind {
            Some(k) => by_kind.entry(k).or_default().push(l.clone()),
            None => other.push(l.clone()),
        }
    }
    let mut sections = Vec::new();
    if !breaking.is_empty() {
        sections.push(Section {
            kind: "breaking".into(),
            title: "Breaking changes".into(),
            commits: breaking.clone(),
        });
    }
    for (k, title) in KINDS {
        if let Some(lines) = by_kind.remove(k) {
            sections.push(Section {
                kind: k.to_string(),
                title: title.to_string(),
                commits: lines,
            });
        }
    }
    // Types Ouro has no title for, alphabetically.
    let rest: BTreeMap<&str, Vec<Line>> = by_kind.into_iter().collect();
    for (k, lines) in rest {
        sections.push(Section {
            kind: k.to_string(),
            title: section_title(k),
            commits: lines,
        });
    }
    if !other.is_empty() {
        sections.push(Section {
            kind: "other".into(),
            title: "Other".into(),
            commits: other,
        });
    }
    Context {
        version: input.version.to_string(),
        previous: input.previous.as_ref().map(|v| v.to_string()),
        date: &input.date,
        sections,
        breaking,
        commits,
        items: &input.items,
        change_requests: &input.change_requests,
        contributors: &input.contributors,
    }
}

/// Renders the notes with `template` (the project's) or [`DEFAULT_TEMPLATE`].
pub fn render(input: &NotesInput, template: Option<&str>) -> Result<String, OuroError> {
    let source = template.unwrap_or(DEFAULT_TEMPLATE);
    if source.len() > MAX_TEMPLATE_BYTES {
        return Err(invalid(
            format!(
                "the notes template is {} bytes; at most {MAX_TEMPLATE_BYTES} are allowed",
                source.len()
            ),
            None,
            "too large",
        ));
    }
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_recursion_limit(64);
    // Enough for the default layout over 100k commits, and a bound on any template's work.
    env.set_fuel(Some(2_000_000 + 400 * input.commits.len() as u64));
    env.add_template("notes.md", source)
        .map_err(template_error)?;
    let tmpl = env.get_template("notes.md").map_err(template_error)?;
    let ctx = Value::from_serialize(context(input));
    let mut out = Capped {
        buf: Vec::new(),
        over: false,
    };
    if let Err(e) = tmpl.render_captured_to(ctx, &mut out) {
        if out.over {
            return Err(invalid(
                format!("the notes are larger than {MAX_OUTPUT_BYTES} bytes"),
                None,
                "output too large",
            ));
        }
        return Err(template_error(e));
    }
    Ok(String::from_utf8_lossy(&out.buf).into_owned())
}

/// A writer that refuses to grow past [`MAX_OUTPUT_BYTES`].
struct Capped {
    buf: Vec<u8>,
    over: bool,
}

impl Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > MAX_OUTPUT_BYTES {
            self.over = true;
            return Err(std::io::Error::other("notes too large"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn template_error(e: minijinja::Error) -> OuroError {
    let detail = e
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| e.kind().to_string());
    let what = e.kind().to_string();
    invalid(
        match e.line() {
            Some(line) => format!("the notes template fails at line {line}: {what}: {detail}"),
            None => format!("the notes template fails: {what}: {detail}"),
        },
        e.line(),
        &detail,
    )
}

fn invalid(message: String, line: Option<usize>, detail: &str) -> OuroError {
    OuroError::new(ErrorCode::ReleaseTemplateInvalid, message).with_details(serde_json::json!({
        "field": "template",
        "line": line,
        "detail": detail,
    }))
}
