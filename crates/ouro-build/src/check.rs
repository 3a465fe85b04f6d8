//! The checks of a pipeline file, each reporting with line and column:
//! 1. the bytes: size budget, UTF-8 (`text`);
//! 2. the shape, against the JSON Schema generated from the model types (unknown keys with a
//!    suggestion, types, allowed values, required keys, ranges) — so the schema editors use and
//!    the parser can never disagree;
//! 3. the meaning: job ids, `needs` (unknown, cycles), steps, `uses:`, cron, globs, expressions,
//!    manual inputs, `expire-in`, matrix size, budgets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde_json::Value;

use crate::diag::{self, Diagnostic, did_you_mean};
use crate::pipeline::{MAX_FILE_BYTES, MAX_JOBS, MAX_MATRIX_JOBS, MAX_STEPS};
use crate::yaml::{Node, V};

/// The file's bytes as text, or why not (too large, not UTF-8 with the position of the first bad
/// byte).
pub(crate) fn text<'a>(file: &str, bytes: &'a [u8]) -> Result<&'a str, Vec<Diagnostic>> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(vec![
            Diagnostic::error(
                file,
                1,
                1,
                diag::TOO_LARGE,
                format!(
                    "the file is {} bytes; pipeline files may be at most {} bytes",
                    bytes.len(),
                    MAX_FILE_BYTES
                ),
            )
            .with_help("split the pipeline into several files under .ouro/pipelines/"),
        ]);
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line = good.iter().filter(|b| **b == b'\n').count() as u32 + 1;
        let line_start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let col = String::from_utf8_lossy(&good[line_start..]).chars().count() as u32 + 1;
        vec![
            Diagnostic::error(
                file,
                line,
                col,
                diag::NOT_UTF8,
                format!(
                    "the file is not valid UTF-8 (byte 0x{:02x} at offset {})",
                    bytes[e.valid_up_to()],
                    e.valid_up_to()
                ),
            )
            .with_help("save the file as UTF-8"),
        ]
    })
}

fn schema() -> &'static Value {
    static S: OnceLock<Value> = OnceLock::new();
    S.get_or_init(crate::pipeline::json_schema)
}

/// Every diagnostic for a parsed YAML tree (empty when the file is valid).
pub(crate) fn check(file: &str, text: &str, root: &Node) -> Vec<Diagnostic> {
    let mut c = Checker {
        file,
        text,
        root: schema(),
        out: Vec::new(),
        owner: None,
    };
    let s = schema();
    c.validate(root, s, "the pipeline");
    c.semantics(root);
    c.out
        .sort_by(|a, b| (a.line, a.col, a.code).cmp(&(b.line, b.col, b.code)));
    c.out.dedup();
    c.out
}

struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    root: &'static Value,
    out: Vec<Diagnostic>,
    /// The key whose value is being validated (missing keys of a mapping point at its key).
    owner: Option<Node>,
}

fn types_of(s: &Value) -> Vec<&str> {
    match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn type_matches(t: &str, node: &Node) -> bool {
    match (t, &node.v) {
        ("null", V::Null) | ("boolean", V::Bool(_)) | ("array", V::Seq(_)) => true,
        ("object", V::Map(_)) | ("string", V::Str(_)) | ("integer", V::Int(_)) => true,
        // A number or boolean where a string is expected is read as its text (`name: 2024`).
        ("string", V::Int(_) | V::Float(_) | V::Bool(_)) => true,
        ("number", V::Int(_) | V::Float(_)) => true,
        _ => false,
    }
}

fn type_words(t: &str) -> &'static str {
    match t {
        "null" => "nothing",
        "boolean" => "a boolean (true or false)",
        "array" => "a list",
        "object" => "a mapping",
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        _ => "a value",
    }
}

impl Checker<'_> {
    fn resolve(&self, mut s: &'static Value) -> &'static Value {
        for _ in 0..16 {
            match s.get("$ref").and_then(Value::as_str) {
                Some(r) => {
                    // `#/$defs/Name` or `#/definitions/Name`: a JSON pointer into the root.
                    match self.root.pointer(r.trim_start_matches('#')) {
                        Some(t) => s = t,
                        None => return s,
                    }
                }
                None => return s,
            }
        }
        s
    }

    /// The types a schema accepts (following refs and alternatives).
    fn accepted_types(&self, s: &'static Value, acc: &mut Vec<String>) {
        let s = self.resolve(s);
        for t in types_of(s) {
            if !acc.iter().any(|a| a == t) {
                acc.push(t.to_string());
            }
        }
        if s.get("enum").is_some() && !acc.iter().any(|a| a == "string") {
            acc.push("string".into());
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(alts) = s.get(key).and_then(Value::as_array) {
                for a in alts {
                    self.accepted_types(a, acc);
                }
            }
        }
    }

    fn kind_fits(&self, s: &'static Value, node: &Node) -> bool {
        let mut acc = Vec::new();
        self.accepted_types(s, &mut acc);
        acc.is_empty() || acc.iter().any(|t| type_matches(t, node))
    }

    fn validate(&mut self, node: &Node, s: &'static Value, what: &str) {
        let s = self.resolve(s);
        let owner = self.owner.take();
        if s.as_bool() == Some(true) {
            return;
        }
        let alts = s
            .get("anyOf")
            .or_else(|| s.get("oneOf"))
            .and_then(Value::as_array);
        if let Some(alts) = alts {
            // Alternatives that are all constants (an enum with documented variants) read as
            // one list of allowed values.
            let consts: Option<Vec<&str>> = alts
                .iter()
                .map(|a| self.resolve(a).get("const").and_then(Value::as_str))
                .collect();
            if let Some(names) = consts {
                self.allowed_values(node, &names, what);
                return;
            }
            let mut best: Option<Vec<Diagnostic>> = None;
            for a in alts {
                if !self.kind_fits(a, node) {
                    continue;
                }
                let saved = std::mem::take(&mut self.out);
                self.owner.clone_from(&owner);
                self.validate(node, a, what);
                let errs = std::mem::replace(&mut self.out, saved);
                if errs.is_empty() {
                    return;
                }
                if best.as_ref().is_none_or(|b| errs.len() < b.len()) {
                    best = Some(errs);
                }
            }
            match best {
                Some(errs) => self.out.extend(errs),
                None => self.type_error(node, s, what),
            }
            return;
        }
        let types = types_of(s);
        if !types.is_empty() && !types.iter().any(|t| type_matches(t, node)) {
            self.type_error(node, s, what);
            return;
        }
        if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
            let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
            self.allowed_values(node, &names, what);
            return;
        }
        if let Some(c) = s.get("const").and_then(Value::as_str) {
            self.allowed_values(node, &[c], what);
            return;
        }
        let num = match node.v {
            V::Int(i) => Some((i as f64, i.to_string())),
            V::Float(f) => Some((f, f.to_string())),
            _ => None,
        };
        if let Some((x, i)) = num {
            let min = s.get("minimum").filter(|v| v.is_number());
            let max = s.get("maximum").filter(|v| v.is_number());
            let below = min.and_then(Value::as_f64).is_some_and(|m| x < m);
            let above = max.and_then(Value::as_f64).is_some_and(|m| x > m);
            if below || above || x.is_nan() {
                let range = match (min, max) {
                    (Some(a), Some(b)) => format!("from {a} to {b}"),
                    (Some(a), None) => format!("at least {a}"),
                    (None, Some(b)) => format!("at most {b}"),
                    _ => unreachable!(),
                };
                self.out.push(node.diag(
                    self.file,
                    diag::OUT_OF_RANGE,
                    format!("{what} is {i}; it must be {range}"),
                ));
            }
        }
        match &node.v {
            V::Map(entries) => self.validate_map(owner.as_ref().unwrap_or(node), entries, s, what),
            V::Seq(items) => {
                if let Some(item) = s.get("items") {
                    for (i, n) in items.iter().enumerate() {
                        self.validate(n, item, &format!("item {} of {what}", i + 1));
                    }
                }
            }
            _ => {}
        }
    }

    fn allowed_values(&mut self, node: &Node, names: &[&str], what: &str) {
        if node.as_str().is_some_and(|v| names.contains(&v)) {
            return;
        }
        if node.map().is_some() || node.seq().is_some() {
            self.out.push(node.diag(
                self.file,
                diag::INVALID_TYPE,
                format!("{what} must be a string, found {}", node.describe()),
            ));
            return;
        }
        let shown = node.scalar_text().unwrap_or_default();
        let list = names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut d = node.diag(
            self.file,
            diag::INVALID_VALUE,
            format!("`{shown}` is not allowed for {what}; expected one of {list}"),
        );
        if let Some(m) = node.as_str().and_then(|v| did_you_mean(v, names)) {
            d = d.with_help(format!("did you mean `{m}`?"));
        }
        self.out.push(d);
    }

    fn type_error(&mut self, node: &Node, s: &'static Value, what: &str) {
        let mut acc = Vec::new();
        self.accepted_types(s, &mut acc);
        if acc.len() > 1 {
            acc.retain(|t| t != "null");
        }
        let expected = acc
            .iter()
            .map(|t| type_words(t))
            .collect::<Vec<_>>()
            .join(" or ");
        self.out.push(node.diag(
            self.file,
            diag::INVALID_TYPE,
            format!("{what} must be {expected}, found {}", node.describe()),
        ));
    }

    fn validate_map(
        &mut self,
        node: &Node,
        entries: &[(Node, Node)],
        s: &'static Value,
        what: &str,
    ) {
        let props = s.get("properties").and_then(Value::as_object);
        let additional = s.get("additionalProperties");
        let names: Vec<&str> = props
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let is_step = names.contains(&"run") && names.contains(&"shell");
        let mut has_uses = false;
        // Required keys a misspelt key was suggested for: their absence is already explained.
        let mut suggested: Vec<&str> = Vec::new();
        for (k, v) in entries {
            let Some(key) = k.scalar_text() else {
                self.out.push(k.diag(
                    self.file,
                    diag::INVALID_TYPE,
                    format!("keys of {what} must be strings, found {}", k.describe()),
                ));
                continue;
            };
            if let Some(ps) = props.and_then(|p| p.get(&key)) {
                self.owner = Some(key_pos(k));
                self.validate(v, ps, &format!("`{key}`"));
                continue;
            }
            match additional {
                Some(Value::Bool(false)) => {
                    if is_step && key == "uses" {
                        has_uses = true;
                        self.out.push(
                            k.diag(
                                self.file,
                                diag::USES_UNSUPPORTED,
                                "actions are not supported yet; use `run:`".into(),
                            )
                            .with_label("`uses:` is not supported")
                            .with_help("write the commands the action would run in a `run:` step"),
                        );
                        continue;
                    }
                    let mut d = k
                        .diag(
                            self.file,
                            diag::UNKNOWN_KEY,
                            format!("unknown key `{key}` in {what}"),
                        )
                        .with_label("unknown key");
                    d = match did_you_mean(&key, &names) {
                        Some(m) => {
                            suggested.push(m);
                            d.with_help(format!("did you mean `{m}`?"))
                        }
                        None if !names.is_empty() => d.with_help(format!(
                            "allowed keys here: {}",
                            names
                                .iter()
                                .map(|n| format!("`{n}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                        None => d,
                    };
                    self.out.push(d);
                }
                Some(extra) if extra.is_object() => {
                    let label = if what == "`env`" {
                        format!("variable `{key}`")
                    } else {
                        format!("`{key}`")
                    };
                    self.owner = Some(key_pos(k));
                    self.validate(v, extra, &label);
                }
                _ => {}
            }
        }
        if let Some(req) = s.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if entries.iter().any(|(k, _)| k.as_str() == Some(r)) || suggested.contains(&r) {
                    continue;
                }
                let d = if is_step && r == "run" {
                    if has_uses {
                        continue;
                    }
                    node.diag(
                        self.file,
                        diag::STEP_WITHOUT_RUN,
                        "this step has no `run:` command".into(),
                    )
                    .with_help("add `run: <commands>` to the step")
                } else if r == "steps" {
                    node.diag(self.file, diag::NO_STEPS, format!("{what} has no `steps:`"))
                        .with_help("a job needs at least one step: `steps: [{run: ...}]`")
                } else {
                    node.diag(
                        self.file,
                        diag::MISSING_FIELD,
                        format!("{what} is missing the required key `{r}`"),
                    )
                };
                self.out.push(d);
            }
        }
    }

    fn push(&mut self, d: Diagnostic) {
        self.out.push(d);
    }

    fn semantics(&mut self, root: &Node) {
        let Some(_) = root.map() else { return };
        if let Some((jk, jobs)) = root.entry("jobs") {
            self.jobs(jk, jobs);
        }
        if let Some(on) = root.get("on") {
            self.triggers(on);
        }
        if let Some(env) = root.get("env") {
            self.templates(env);
        }
    }

    fn triggers(&mut self, on: &Node) {
        let Some(map) = on.map() else { return };
        for (k, v) in map {
            match k.as_str() {
                Some("push") => {
                    for key in ["branches", "tags", "paths"] {
                        if let Some(list) = v.get(key) {
                            self.globs(list, key);
                        }
                    }
                }
                Some("change_request") => {
                    for key in ["branches", "paths"] {
                        if let Some(list) = v.get(key) {
                            self.globs(list, key);
                        }
                    }
                }
                Some("schedule") => {
                    for item in v.seq().unwrap_or_default() {
                        let cron = item.get("cron").unwrap_or(item);
                        if let Some((expr, _)) = cron.strings().into_iter().next() {
                            self.cron(cron, &expr);
                        }
                    }
                }
                Some("manual") => {
                    if let Some(inputs) = v.get("inputs").and_then(Node::map) {
                        for (ik, iv) in inputs {
                            self.input(ik, iv);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn cron(&mut self, node: &Node, expr: &str) {
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build();
        if let Err(e) = parser.parse(expr) {
            self.push(
                node.diag(
                    self.file,
                    diag::INVALID_CRON,
                    format!("`{expr}` is not a valid cron expression: {e}"),
                )
                .with_help("use 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, e.g. `0 3 * * MON-FRI`"),
            );
        }
    }

    fn globs(&mut self, list: &Node, what: &str) {
        for (pat, n) in list.strings() {
            let p = pat.strip_prefix('!').unwrap_or(&pat);
            if p.is_empty() {
                self.push(n.diag(
                    self.file,
                    diag::INVALID_GLOB,
                    format!("an empty pattern in `{what}`"),
                ));
                continue;
            }
            if let Err(e) = glob::Pattern::new(p) {
                self.push(
                    n.diag(
                        self.file,
                        diag::INVALID_GLOB,
                        format!("`{pat}` is not a valid pattern in `{what}`: {}", e.msg),
                    )
                    .with_help("patterns use `*`, `**`, `?` and `[...]`; a leading `!` excludes"),
                );
            }
        }
    }

    fn input(&mut self, key: &Node, v: &Node) {
        let id = key.scalar_text().unwrap_or_default();
        if !valid_id(&id) {
            self.push(
                key.diag(
                    self.file,
                    diag::INVALID_ID,
                    format!("`{id}` is not a valid input id"),
                )
                .with_help("ids use letters, digits, `_` and `-`, and start with a letter or `_`"),
            );
        }
        let kind = v.get("type").and_then(Node::as_str).unwrap_or("string");
        let options: Vec<String> = v
            .get("options")
            .map(|o| o.strings().into_iter().map(|(s, _)| s).collect())
            .unwrap_or_default();
        if kind == "choice" && options.is_empty() {
            self.push(
                v.diag(
                    self.file,
                    diag::INVALID_INPUT,
                    format!("the choice input `{id}` has no `options`"),
                )
                .with_help("list the allowed values: `options: [a, b]`"),
            );
        }
        if kind != "choice" && !options.is_empty() {
            let n = v.get("options").unwrap_or(v);
            self.push(n.diag(
                self.file,
                diag::INVALID_INPUT,
                format!("`options` only applies to `type: choice` (input `{id}` is {kind})"),
            ));
        }
        if let Some(def) = v.get("default") {
            let ok = match kind {
                "boolean" => matches!(def.v, V::Bool(_)),
                "number" => matches!(def.v, V::Int(_) | V::Float(_)),
                "choice" => def.as_str().is_some_and(|d| options.iter().any(|o| o == d)),
                _ => matches!(def.v, V::Str(_)),
            };
            if !ok {
                self.push(def.diag(
                    self.file,
                    diag::INVALID_INPUT,
                    format!(
                        "the default of input `{id}` does not fit its type `{kind}`{}",
                        if kind == "choice" {
                            " (not one of its options)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
    }

    fn jobs(&mut self, jobs_key: &Node, jobs: &Node) {
        let Some(entries) = jobs.map() else { return };
        if entries.is_empty() {
            self.push(
                jobs.diag(self.file, diag::NO_STEPS, "the pipeline has no jobs".into())
                    .with_help("add a job: `jobs: {build: {steps: [{run: make}]}}`"),
            );
        }
        if entries.len() > MAX_JOBS {
            self.push(jobs_key.diag(
                self.file,
                diag::TOO_MANY_JOBS,
                format!(
                    "the pipeline defines {} jobs; at most {MAX_JOBS} are allowed",
                    entries.len()
                ),
            ));
        }
        let ids: Vec<String> = entries
            .iter()
            .filter_map(|(k, _)| k.scalar_text())
            .collect();
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut graph: BTreeMap<String, Vec<(String, &Node)>> = BTreeMap::new();
        for (k, job) in entries {
            let id = k.scalar_text().unwrap_or_default();
            if !valid_id(&id) {
                self.push(
                    k.diag(
                        self.file,
                        diag::INVALID_ID,
                        format!("`{id}` is not a valid job id"),
                    )
                    .with_help(
                        "job ids use letters, digits, `_` and `-`, and start with a letter or `_`",
                    ),
                );
            }
            let mut deps = Vec::new();
            if let Some(needs) = job.get("needs") {
                for (n, node) in needs.strings() {
                    let n = n.as_str();
                    if id_refs.contains(&n) {
                        deps.push((n.to_string(), node));
                    } else {
                        let mut d = node.diag(
                            self.file,
                            diag::NEEDS_UNKNOWN,
                            format!("job `{id}` needs `{n}`, which is not a job of this pipeline"),
                        );
                        let others: Vec<&str> =
                            id_refs.iter().copied().filter(|j| *j != id).collect();
                        if let Some(m) = did_you_mean(n, &others) {
                            d = d.with_help(format!("did you mean `{m}`?"));
                        }
                        self.push(d);
                    }
                }
            }
            graph.insert(id.clone(), deps);
            self.job(&id, job);
        }
        self.cycles(&graph);
    }

    fn cycles(&mut self, graph: &BTreeMap<String, Vec<(String, &Node)>>) {
        // Depth-first search; a back edge closes a cycle, reported once per set of jobs.
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        let mut mark: BTreeMap<&str, Mark> =
            graph.keys().map(|k| (k.as_str(), Mark::New)).collect();
        let mut seen_cycles: BTreeSet<Vec<String>> = BTreeSet::new();
        let mut found: Vec<(Vec<String>, &Node)> = Vec::new();
        for start in graph.keys() {
            if mark[start.as_str()] != Mark::New {
                continue;
            }
            // Iterative DFS: stack of (job, next edge index).
            let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
            mark.insert(start.as_str(), Mark::Active);
            while let Some((job, i)) = stack.last().copied() {
                let edges = &graph[job];
                if i >= edges.len() {
                    mark.insert(job, Mark::Done);
                    stack.pop();
                    continue;
                }
                stack.last_mut().unwrap().1 += 1;
                let (dep, node) = (&edges[i].0, edges[i].1);
                match mark.get(dep.as_str()).copied() {
                    Some(Mark::New) => {
                        mark.insert(dep.as_str(), Mark::Active);
                        stack.push((dep.as_str(), 0));
                    }
                    Some(Mark::Active) => {
                        let pos = stack.iter().position(|(j, _)| *j == dep).unwrap_or(0);
                        let cycle: Vec<String> =
                            stack[pos..].iter().map(|(j, _)| j.to_string()).collect();
                        let mut key = cycle.clone();
                        key.sort();
                        if seen_cycles.insert(key) {
                            found.push((cycle, node));
                        }
                    }
                    _ => {}
                }
            }
        }
        for (cycle, node) in found {
            let mut path: Vec<String> = cycle.iter().map(|j| format!("`{j}`")).collect();
            path.push(format!("`{}`", cycle[0]));
            // `a -> b` reads "a needs b".
            let text = path.join(" -> ");
            self.push(
                node.diag(
                    self.file,
                    diag::NEEDS_CYCLE,
                    format!("the needs of these jobs form a cycle: {text}"),
                )
                .with_label("closes the cycle")
                .with_help("remove one of the `needs` so the jobs can run in some order"),
            );
        }
    }

    fn job(&mut self, id: &str, job: &Node) {
        if job.map().is_none() {
            return;
        }
        if let Some(cond) = job.get("if") {
            self.condition(cond);
        }
        if let Some((sk, steps)) = job.entry("steps")
            && let Some(list) = steps.seq()
        {
            {
                if list.is_empty() {
                    self.push(
                        steps
                            .diag(
                                self.file,
                                diag::NO_STEPS,
                                format!("job `{id}` has no steps"),
                            )
                            .with_help("add at least one step: `- run: make`"),
                    );
                }
                if list.len() > MAX_STEPS {
                    self.push(sk.diag(
                        self.file,
                        diag::TOO_MANY_STEPS,
                        format!(
                            "job `{id}` has {} steps; at most {MAX_STEPS} are allowed",
                            list.len()
                        ),
                    ));
                }
                for step in list {
                    if let Some(run) = step.get("run")
                        && run.as_str().is_some_and(|r| r.trim().is_empty())
                    {
                        self.push(
                            run.diag(
                                self.file,
                                diag::STEP_WITHOUT_RUN,
                                "the `run:` of this step is empty".into(),
                            )
                            .with_help("give the step the commands to run"),
                        );
                    }
                    if let Some(cond) = step.get("if") {
                        self.condition(cond);
                    }
                    if let Some(map) = step.map() {
                        for (k, v) in map {
                            if k.as_str() != Some("if") {
                                self.templates(v);
                            }
                        }
                    }
                }
            }
        }
        if let Some(net) = job.get("network")
            && net.v == V::Bool(false)
            && job.get("executor").and_then(Node::as_str) != Some("sandbox")
        {
            self.push(
                net.diag(
                    self.file,
                    diag::NETWORK_NEEDS_SANDBOX,
                    format!("job `{id}` turns the network off, which only the sandbox can do"),
                )
                .with_label("the shell executor cannot take the network away")
                .with_help("add `executor: sandbox` to the job, or remove `network: false`"),
            );
        }
        for (k, v) in job.map().unwrap_or_default() {
            match k.as_str() {
                Some("if" | "steps") => {}
                Some("strategy") => {
                    if let Some(m) = v.get("matrix") {
                        self.matrix(id, m);
                    }
                    self.templates(v);
                }
                Some("artifacts") => {
                    if let Some(p) = v.get("paths") {
                        self.globs(p, "artifacts.paths");
                    }
                    if let Some(e) = v.get("expire-in")
                        && let Some(text) = e.as_str()
                        && parse_duration(text).is_none()
                    {
                        self.push(
                            e.diag(
                                self.file,
                                diag::INVALID_VALUE,
                                format!("`{text}` is not a duration"),
                            )
                            .with_help("write a number and a unit: `30 minutes`, `12 hours`, `7 days`, `2 weeks`"),
                        );
                    }
                    self.templates(v);
                }
                Some("cache") => {
                    if let Some(p) = v.get("paths") {
                        self.globs(p, "cache.paths");
                    }
                    self.templates(v);
                }
                _ => self.templates(v),
            }
        }
    }

    fn matrix(&mut self, id: &str, m: &Node) {
        let Some(map) = m.map() else { return };
        let mut axes: Vec<(&str, &[Node])> = Vec::new();
        let mut include = 0usize;
        let mut exclude: &[Node] = &[];
        for (k, v) in map {
            match (k.as_str(), v.seq()) {
                (Some("include"), Some(items)) => include = items.len(),
                (Some("exclude"), Some(items)) => exclude = items,
                (Some(name), Some(values)) => axes.push((name, values)),
                _ => {}
            }
        }
        let product = axes
            .iter()
            .try_fold(1usize, |acc, (_, vs)| acc.checked_mul(vs.len()));
        let count = match product {
            Some(p) if p <= 1 << 16 => {
                // Count the combinations that no `exclude` entry matches, plus the includes
                // (an upper bound: an include may only add keys to an existing combination).
                let mut kept = 0usize;
                for i in 0..p {
                    let mut rest = i;
                    let combo: Vec<(&str, &Node)> = axes
                        .iter()
                        .map(|(name, vs)| {
                            let v = &vs[rest % vs.len()];
                            rest /= vs.len();
                            (*name, v)
                        })
                        .collect();
                    let excluded = exclude.iter().any(|ex| {
                        ex.map().is_some_and(|pairs| {
                            pairs.iter().all(|(ek, ev)| {
                                combo
                                    .iter()
                                    .any(|(n, v)| ek.as_str() == Some(n) && same_value(v, ev))
                            })
                        })
                    });
                    if !excluded {
                        kept += 1;
                    }
                }
                if axes.is_empty() {
                    include
                } else {
                    kept + include
                }
            }
            _ => usize::MAX,
        };
        if count > MAX_MATRIX_JOBS {
            let shown = if count == usize::MAX {
                "more than 65536".to_string()
            } else {
                count.to_string()
            };
            self.push(
                m.diag(
                    self.file,
                    diag::MATRIX_TOO_LARGE,
                    format!(
                        "the matrix of job `{id}` expands to {shown} jobs; at most {MAX_MATRIX_JOBS} are allowed"
                    ),
                )
                .with_help("use fewer values per axis, or `exclude` combinations"),
            );
        }
    }

    /// An `if:` condition: a bare expression or one `${{ ... }}`.
    fn condition(&mut self, node: &Node) {
        let Some(text) = node.as_str() else { return };
        // Bare or wrapped in one `${{ }}`: the expression language decides (and refuses text
        // mixed with `${{ }}`, which would always be true).
        let res = check_expression(ExprKind::Condition, text);
        if let Err(e) = res {
            self.expr_diag(node, text, e);
        }
    }

    /// Every string under `node` that holds `${{` is checked as a template.
    fn templates(&mut self, node: &Node) {
        match &node.v {
            V::Str(s) if s.contains("${{") => {
                if let Err(e) = check_expression(ExprKind::Template, s) {
                    self.expr_diag(node, s, e);
                }
            }
            V::Seq(items) => items.iter().for_each(|n| self.templates(n)),
            V::Map(entries) => entries.iter().for_each(|(_, v)| self.templates(v)),
            _ => {}
        }
    }

    fn expr_diag(&mut self, node: &Node, text: &str, e: ExprIssue) {
        // Point into the scalar when it is written plainly on its line (the offset then maps to a
        // column); otherwise at the scalar's start.
        let mut col = node.col;
        let line = self
            .text
            .lines()
            .nth(node.line.saturating_sub(1) as usize)
            .unwrap_or("");
        let start: String = line
            .chars()
            .skip(node.col.saturating_sub(1) as usize)
            .collect();
        let prefix = text.get(..e.offset.min(text.len())).unwrap_or("");
        if start.starts_with(text)
            || (text.len() > 4 && start.starts_with(prefix) && !prefix.contains('\n'))
        {
            col += prefix.chars().count() as u32;
        }
        let d = Diagnostic::error(
            self.file,
            node.line,
            col,
            diag::EXPRESSION,
            format!("invalid expression: {}", e.message),
        );
        self.push(d.with_help(format!(
            "{}: see the expression language in docs/expressions.md",
            e.code
        )));
    }
}

/// A key's position, without its content.
fn key_pos(k: &Node) -> Node {
    Node {
        v: V::Null,
        line: k.line,
        col: k.col,
        len: k.len,
    }
}

fn same_value(n: &Node, other: &Node) -> bool {
    n.v == other.v
}

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `expire-in` durations: `<n> <unit>` or `<n><unit>` with minutes, hours, days or weeks
/// (singular, plural, or m/h/d/w). Returns seconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "m" | "min" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        _ => return None,
    };
    if n == 0 {
        return None;
    }
    n.checked_mul(mult)
}

/// Where an expression appears: a bare condition (`if: a == b`) or a string with `${{ ... }}`
/// parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExprKind {
    Condition,
    Template,
}

/// Why an expression does not parse: a byte offset into the text, a stable code and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExprIssue {
    pub offset: usize,
    pub code: &'static str,
    pub message: String,
}

/// Checks one expression or template. The one place the pipeline checker meets the expression
/// language.
pub fn check_expression(kind: ExprKind, text: &str) -> Result<(), ExprIssue> {
    let res = match kind {
        ExprKind::Condition => crate::expr::parse_condition(text).map(|_| ()),
        ExprKind::Template => crate::expr::parse_template(text).map(|_| ()),
    };
    res.map_err(|e| ExprIssue {
        offset: e.offset,
        code: e.code,
        message: e.message,
    })
}
