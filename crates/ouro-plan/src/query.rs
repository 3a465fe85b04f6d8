//! The item query language of the UI, the API and saved views
//! (`type:story state:"In progress" assignee:me -label:blocked login sort:-updated`).
//!
//! [`parse`] turns text into a [`Query`]; [`to_sql`] compiles it to a WHERE fragment with bound
//! parameters and [`order_by`] to an ORDER BY list. The language is described, with examples, in
//! `docs/query-language.md`.
//!
//! Combination: terms of different fields must all hold (AND). Repeated terms of one field with
//! the same sign are alternatives (OR), so they are merged into one [`Clause`]: `label:api
//! label:ui` is "labelled api or ui", `-label:a -label:b` is "labelled neither a nor b". Two
//! exceptions must all hold and so stay separate clauses: text words (`login error` finds items
//! containing both words) and range comparisons (`estimate:>=3 estimate:<=8` is a range).

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Query {
    /// All must hold.
    pub clauses: Vec<Clause>,
    /// In order of precedence; empty means the default order (rank).
    pub sort: Vec<SortKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Clause {
    pub field: Field,
    /// `-field:value`: none of the values holds.
    pub negated: bool,
    /// At least one holds (OR). Never empty.
    pub values: Vec<Value>,
    /// Char offset of the clause's first term in the query, for messages.
    pub position: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Type,
    State,
    Category,
    Assignee,
    Reporter,
    Label,
    Priority,
    Text,
    Parent,
    Epic,
    Sprint,
    Key,
    Estimate,
    Due,
    Created,
    Updated,
}

impl Field {
    pub const ALL: [Field; 16] = [
        Field::Type,
        Field::State,
        Field::Category,
        Field::Assignee,
        Field::Reporter,
        Field::Label,
        Field::Priority,
        Field::Text,
        Field::Parent,
        Field::Epic,
        Field::Sprint,
        Field::Key,
        Field::Estimate,
        Field::Due,
        Field::Created,
        Field::Updated,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Type => "type",
            Field::State => "state",
            Field::Category => "category",
            Field::Assignee => "assignee",
            Field::Reporter => "reporter",
            Field::Label => "label",
            Field::Priority => "priority",
            Field::Text => "text",
            Field::Parent => "parent",
            Field::Epic => "epic",
            Field::Sprint => "sprint",
            Field::Key => "key",
            Field::Estimate => "estimate",
            Field::Due => "due",
            Field::Created => "created",
            Field::Updated => "updated",
        }
    }

    pub fn from_name(s: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// State categories, the fixed buckets every workflow state belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Todo,
    InProgress,
    Done,
}

impl Category {
    pub fn name(self) -> &'static str {
        match self {
            Category::Todo => "todo",
            Category::InProgress => "in_progress",
            Category::Done => "done",
        }
    }
}

/// The priorities, highest first; `sort:priority` puts the highest first. They are the values
/// `items.priority` stores (`ouro_plan::items::Priority`); "no priority" is stored as the text
/// `none`, not NULL, and `priority:none` matches it.
pub const PRIORITIES: [&str; 4] = ["critical", "high", "medium", "low"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Cmp {
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
}

impl Cmp {
    pub fn symbol(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }
}

/// A calendar day (UTC), `2026-12-01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl Date {
    pub fn parse(s: &str) -> Option<Date> {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            let part = s.get(r)?;
            part.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| part.parse().ok())?
        };
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let days_in_month = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        (1..=days_in_month).contains(&day).then_some(Date {
            year: year as i32,
            month: month as u8,
            day: day as u8,
        })
    }

    /// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
    pub fn days_since_epoch(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// Unix milliseconds of this day's start, UTC (the time columns' unit).
    pub fn start_ms(self) -> i64 {
        self.days_since_epoch() * 86_400_000
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Value {
    /// A word or phrase: a type, state, label, priority, search text, user, sprint name.
    /// Lower-cased for case-insensitive fields.
    Text {
        text: String,
    },
    /// `assignee:me`, `reporter:me`: the signed-in user.
    Me,
    /// `assignee:none` and the like: the field is empty.
    None,
    /// `sprint:current`: the project's active sprint.
    Current,
    /// `due:overdue`: due before now and not done.
    Overdue,
    Category {
        category: Category,
    },
    /// `parent:DEMO-3`, `key:DEMO-4` (upper-cased).
    ItemKey {
        key: String,
    },
    Number {
        op: Cmp,
        value: i64,
    },
    Date {
        op: Cmp,
        date: Date,
    },
}

impl Value {
    /// Range comparisons must all hold, so they are not merged into OR lists.
    fn is_range(&self) -> bool {
        matches!(self, Value::Number { op, .. } | Value::Date { op, .. } if *op != Cmp::Eq)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SortField {
    Rank,
    Created,
    Updated,
    Priority,
    Due,
    Estimate,
    Key,
    Title,
}

impl SortField {
    pub const ALL: [SortField; 8] = [
        SortField::Rank,
        SortField::Created,
        SortField::Updated,
        SortField::Priority,
        SortField::Due,
        SortField::Estimate,
        SortField::Key,
        SortField::Title,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SortField::Rank => "rank",
            SortField::Created => "created",
            SortField::Updated => "updated",
            SortField::Priority => "priority",
            SortField::Due => "due",
            SortField::Estimate => "estimate",
            SortField::Key => "key",
            SortField::Title => "title",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SortKey {
    pub field: SortField,
    /// `sort:-updated`
    pub descending: bool,
}

/// A parse error, located for the caret display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryError {
    /// Char (not byte) offset in the query; at most the query's length in chars.
    pub position: usize,
    pub expected: String,
    pub found: String,
    /// Stable machine-readable reason, e.g. `query.unknown_field`.
    pub code: &'static str,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at {}: expected {}, found {}",
            self.position, self.expected, self.found
        )
    }
}

impl std::error::Error for QueryError {}

/// The query on one line and a `^` under the error's position on the next, for monospaced
/// display (one column per char; wide characters are not accounted for).
pub fn caret(query: &str, err: &QueryError) -> String {
    // Tabs and newlines would break the alignment; show them as spaces.
    let line: String = query
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect();
    format!("{line}\n{}^", " ".repeat(err.position))
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// A term as read from the text, before its value is interpreted.
struct Term {
    negated: bool,
    /// None for a bare word or phrase (text search).
    field: Option<(String, usize)>,
    value: String,
    /// Char offset of the term and of its value.
    start: usize,
    value_start: usize,
    /// The value was quoted: never a keyword like `me` or `none`.
    quoted: bool,
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
}

fn describe(c: Option<char>) -> String {
    match c {
        None => "end of query".into(),
        Some(c) if c.is_whitespace() => "a space".into(),
        Some(c) => format!("{c:?}"),
    }
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn err(&self, position: usize, code: &'static str, expected: impl Into<String>) -> QueryError {
        QueryError {
            position,
            expected: expected.into(),
            found: describe(self.chars.get(position).copied()),
            code,
        }
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// A double-quoted string; `pos` is on the opening quote.
    fn quoted(&mut self) -> Result<String, QueryError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(QueryError {
                        position: open,
                        expected: "a closing '\"' for this quote".into(),
                        found: "end of query".into(),
                        code: "query.unterminated_quote",
                    });
                }
                Some('"') => {
                    self.pos += 1;
                    break;
                }
                Some('\\') => match self.chars.get(self.pos + 1) {
                    Some(&c @ ('"' | '\\')) => {
                        out.push(c);
                        self.pos += 2;
                    }
                    _ => {
                        return Err(self.err(
                            self.pos + 1,
                            "query.bad_escape",
                            "'\"' or '\\' after '\\' in a quoted value",
                        ));
                    }
                },
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        // `"a"b` is a typo, not two terms.
        if self.peek().is_some_and(|c| !c.is_whitespace()) {
            return Err(self.err(
                self.pos,
                "query.expected_space",
                "a space after the closing '\"'",
            ));
        }
        Ok(out)
    }

    /// Up to the next whitespace.
    fn bare(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(|c| !c.is_whitespace()) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn term(&mut self) -> Result<Term, QueryError> {
        let start = self.pos;
        let negated = self.peek() == Some('-');
        if negated {
            self.pos += 1;
            if self.peek().is_none_or(char::is_whitespace) {
                return Err(self.err(self.pos, "query.missing_term", "a term after '-'"));
            }
        }
        let body = self.pos;
        if self.peek() == Some('"') {
            let value = self.quoted()?;
            return Ok(Term {
                negated,
                field: None,
                value,
                start,
                value_start: body,
                quoted: true,
            });
        }
        // A field name is letters, digits or underscores followed by ':'; anything else is a bare word.
        let mut end = body;
        while self
            .chars
            .get(end)
            .is_some_and(|c| c.is_alphanumeric() || *c == '_')
        {
            end += 1;
        }
        if self.chars.get(end) == Some(&':') {
            if end == body {
                return Err(self.err(body, "query.missing_field", "a field name before ':'"));
            }
            let name: String = self.chars[body..end]
                .iter()
                .collect::<String>()
                .to_lowercase();
            self.pos = end + 1;
            let value_start = self.pos;
            let (value, quoted) = match self.peek() {
                Some('"') => (self.quoted()?, true),
                None => {
                    return Err(self.err(
                        value_start,
                        "query.missing_value",
                        format!("a value after \"{name}:\""),
                    ));
                }
                Some(c) if c.is_whitespace() => {
                    return Err(self.err(
                        value_start,
                        "query.missing_value",
                        format!("a value after \"{name}:\""),
                    ));
                }
                Some(_) => (self.bare(), false),
            };
            return Ok(Term {
                negated,
                field: Some((name, body)),
                value,
                start,
                value_start,
                quoted,
            });
        }
        let value = self.bare();
        Ok(Term {
            negated,
            field: None,
            value,
            start,
            value_start: body,
            quoted: false,
        })
    }
}

/// The longest query accepted, in chars: far more than anyone types, and it bounds the work
/// (and the number of SQL parameters) a single request can cause.
pub const MAX_QUERY_CHARS: usize = 4096;

/// The most terms (words, filters, sort keys) a query may have. Each becomes one SQL condition
/// joined with AND or OR, and SQLite refuses expressions nested deeper than 1,000, so without a
/// bound a long query of short words would fail in the database instead of here.
pub const MAX_TERMS: usize = 100;

/// Parses a query. Field names and keywords are case-insensitive.
pub fn parse(input: &str) -> Result<Query, QueryError> {
    let mut lx = Lexer {
        chars: input.chars().collect(),
        pos: 0,
    };
    if lx.chars.len() > MAX_QUERY_CHARS {
        return Err(QueryError {
            position: MAX_QUERY_CHARS,
            expected: format!("at most {MAX_QUERY_CHARS} characters"),
            found: format!("{} characters", lx.chars.len()),
            code: "query.too_long",
        });
    }
    let mut query = Query::default();
    let mut terms = 0;
    loop {
        lx.skip_space();
        if lx.peek().is_none() {
            break;
        }
        terms += 1;
        if terms > MAX_TERMS {
            return Err(QueryError {
                position: lx.pos,
                expected: format!("at most {MAX_TERMS} terms"),
                found: "more".into(),
                code: "query.too_many_terms",
            });
        }
        let term = lx.term()?;
        let field = match &term.field {
            None => Field::Text,
            Some((name, _)) if name == "sort" => {
                if term.negated {
                    return Err(QueryError {
                        position: term.start,
                        expected: "sort:-field for a descending order".into(),
                        found: "-sort".into(),
                        code: "query.negated_sort",
                    });
                }
                query.sort.push(sort_key(&term)?);
                continue;
            }
            Some((name, at)) => Field::from_name(name).ok_or_else(|| unknown_field(name, *at))?,
        };
        let value = value(field, &term)?;
        // Merge OR alternatives: same field, same sign, neither a text word nor a range.
        let mergeable = field != Field::Text && !value.is_range();
        let existing = query.clauses.iter_mut().find(|c| {
            mergeable && c.field == field && c.negated == term.negated && !c.values[0].is_range()
        });
        match existing {
            Some(c) => {
                if !c.values.contains(&value) {
                    c.values.push(value);
                }
            }
            None => query.clauses.push(Clause {
                field,
                negated: term.negated,
                values: vec![value],
                position: term.start,
            }),
        }
    }
    Ok(query)
}

fn unknown_field(name: &str, at: usize) -> QueryError {
    let names = Field::ALL.iter().map(|f| f.name()).chain(["sort"]);
    let expected = match suggest(name, names) {
        Some(s) => format!("a known field (did you mean {s}?)"),
        None => "a known field (type, state, category, assignee, reporter, label, priority, text, \
                 parent, epic, sprint, key, estimate, due, created, updated, sort)"
            .into(),
    };
    QueryError {
        position: at,
        expected,
        found: format!("{name:?}"),
        code: "query.unknown_field",
    }
}

/// The closest name by edit distance, if close enough to be a typo, or a known synonym.
fn suggest<'a>(word: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    const SYNONYMS: &[(&str, &str)] = &[
        ("status", "state"),
        ("assigned", "assignee"),
        ("owner", "assignee"),
        ("author", "reporter"),
        ("tag", "label"),
        ("tags", "label"),
        ("labels", "label"),
        ("points", "estimate"),
        ("kind", "type"),
        ("order", "sort"),
        ("iteration", "sprint"),
    ];
    if let Some((_, s)) = SYNONYMS.iter().find(|(w, _)| *w == word) {
        return Some(s);
    }
    let names: Vec<&str> = names.collect();
    // An abbreviation (`prio`, `est`) is a prefix of exactly one name.
    let prefixed: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| word.len() >= 3 && n.starts_with(word))
        .collect();
    if let [only] = prefixed[..] {
        return Some(only);
    }
    names
        .into_iter()
        .map(|n| (levenshtein(word, n), n))
        .filter(|&(d, n)| d <= 2.max(n.chars().count() / 3) && d < word.chars().count().max(1))
        .min_by_key(|&(d, _)| d)
        .map(|(_, n)| n)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn invalid(term: &Term, expected: impl Into<String>) -> QueryError {
    QueryError {
        position: term.value_start,
        expected: expected.into(),
        found: format!("{:?}", term.value),
        code: "query.invalid_value",
    }
}

fn sort_key(term: &Term) -> Result<SortKey, QueryError> {
    let v = term.value.to_lowercase();
    let (descending, name) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v.as_str()),
    };
    match SortField::ALL.into_iter().find(|f| f.name() == name) {
        Some(field) => Ok(SortKey { field, descending }),
        None => {
            let names = SortField::ALL.map(SortField::name);
            let hint = suggest(name, names.into_iter())
                .map(|s| format!(" (did you mean {s}?)"))
                .unwrap_or_default();
            Err(invalid(
                term,
                format!(
                    "a sort order: {}, with '-' for descending{hint}",
                    names.join(", ")
                ),
            ))
        }
    }
}

/// Splits a leading comparison operator: `>=3` -> (Ge, "3"). No operator means `=`.
fn split_cmp(s: &str) -> (Cmp, &str) {
    for (p, op) in [
        (">=", Cmp::Ge),
        ("<=", Cmp::Le),
        (">", Cmp::Gt),
        ("<", Cmp::Lt),
        ("=", Cmp::Eq),
    ] {
        if let Some(rest) = s.strip_prefix(p) {
            return (op, rest);
        }
    }
    (Cmp::Eq, s)
}

/// The platform's own rule, so a query can name every user and only users.
fn is_user_name(s: &str) -> bool {
    ouro_core::ids::validate_user_name(s).is_ok()
}

fn value(field: Field, term: &Term) -> Result<Value, QueryError> {
    let raw = term.value.as_str();
    let lower = raw.to_lowercase();
    // Keywords are only keywords unquoted: `state:"none"` is a state called none.
    let kw = if term.quoted { "" } else { lower.as_str() };
    let text = |t: String| -> Result<Value, QueryError> {
        if t.trim().is_empty() {
            Err(invalid(term, "a non-empty value"))
        } else {
            Ok(Value::Text { text: t })
        }
    };
    match field {
        Field::Type | Field::State | Field::Label => text(lower),
        Field::Text => text(lower),
        // Every category is a keyword, so quoting one changes nothing.
        Field::Category => match lower.as_str() {
            "todo" => Ok(Value::Category {
                category: Category::Todo,
            }),
            "in_progress" => Ok(Value::Category {
                category: Category::InProgress,
            }),
            "done" => Ok(Value::Category {
                category: Category::Done,
            }),
            _ => Err(invalid(term, "a category: todo, in_progress or done")),
        },
        Field::Assignee | Field::Reporter => match kw {
            "me" => Ok(Value::Me),
            "none" => Ok(Value::None),
            _ if is_user_name(&lower) => Ok(Value::Text { text: lower }),
            _ => Err(invalid(term, "a user name, me or none")),
        },
        Field::Priority => match kw {
            "none" => Ok(Value::None),
            _ if PRIORITIES.contains(&lower.as_str()) => Ok(Value::Text { text: lower }),
            _ => Err(invalid(
                term,
                "a priority: critical, high, medium, low or none",
            )),
        },
        Field::Parent | Field::Epic | Field::Key => {
            if kw == "none" && field != Field::Key {
                return Ok(Value::None);
            }
            let key = raw.to_uppercase();
            match ouro_core::refs::parse(&key).as_slice() {
                [r] if r.key == key => Ok(Value::ItemKey { key }),
                _ if field == Field::Key => Err(invalid(term, "an item key like DEMO-42")),
                _ => Err(invalid(term, "an item key like DEMO-42, or none")),
            }
        }
        Field::Sprint => match kw {
            "current" => Ok(Value::Current),
            "none" => Ok(Value::None),
            _ => text(raw.to_owned()),
        },
        Field::Estimate => {
            if kw == "none" {
                return Ok(Value::None);
            }
            let (op, n) = split_cmp(raw);
            match n.parse::<i64>() {
                Ok(value) if value >= 0 => Ok(Value::Number { op, value }),
                _ => Err(invalid(
                    term,
                    "a whole number, optionally after >, >=, <, <= or =, or none",
                )),
            }
        }
        Field::Due | Field::Created | Field::Updated => {
            if field == Field::Due {
                match kw {
                    "overdue" => return Ok(Value::Overdue),
                    "none" => return Ok(Value::None),
                    _ => {}
                }
            }
            let (op, d) = split_cmp(raw);
            match Date::parse(d) {
                Some(date) => Ok(Value::Date { op, date }),
                None if field == Field::Due => Err(invalid(
                    term,
                    "a date YYYY-MM-DD (optionally after >, >=, <, <= or =), overdue or none",
                )),
                None => Err(invalid(
                    term,
                    "a date YYYY-MM-DD, optionally after >, >=, <, <= or =",
                )),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Canonical text

impl fmt::Display for Query {
    /// The canonical spelling: parsing it gives back an equal query (up to positions).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| -> fmt::Result {
            if !std::mem::take(&mut first) {
                f.write_str(" ")?;
            }
            Ok(())
        };
        for c in &self.clauses {
            for v in &c.values {
                sep(f)?;
                if c.negated {
                    f.write_str("-")?;
                }
                write!(f, "{}:", c.field.name())?;
                match v {
                    Value::Text { text } => write_quoted(f, text)?,
                    Value::Me => f.write_str("me")?,
                    Value::None => f.write_str("none")?,
                    Value::Current => f.write_str("current")?,
                    Value::Overdue => f.write_str("overdue")?,
                    Value::Category { category } => f.write_str(category.name())?,
                    Value::ItemKey { key } => f.write_str(key)?,
                    Value::Number { op, value } => write!(f, "{}{value}", cmp_prefix(*op))?,
                    Value::Date { op, date } => write!(f, "{}{date}", cmp_prefix(*op))?,
                }
            }
        }
        for s in &self.sort {
            sep(f)?;
            write!(
                f,
                "sort:{}{}",
                if s.descending { "-" } else { "" },
                s.field.name()
            )?;
        }
        Ok(())
    }
}

fn cmp_prefix(op: Cmp) -> &'static str {
    if op == Cmp::Eq { "" } else { op.symbol() }
}

/// Always quoted, so that words like `none` stay text.
fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

// ---------------------------------------------------------------------------------------------
// SQL

/// A bound parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SqlArg {
    I64(i64),
    Text(String),
}

/// What the compiler needs from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlContext {
    /// The signed-in user, for `me`; `None` makes `assignee:me` match nothing.
    pub me: Option<i64>,
    /// Now, Unix milliseconds, for `due:overdue` (bound, so both engines agree on the clock).
    pub now_ms: i64,
    /// The first placeholder number: `$next_param`, `$next_param + 1`...
    pub next_param: usize,
    /// The engine the SQL is for: a few conditions take a shape each planner handles best.
    pub backend: ouro_store::Backend,
}

struct Sql {
    args: Vec<SqlArg>,
    first: usize,
}

impl Sql {
    fn bind(&mut self, a: SqlArg) -> String {
        self.args.push(a);
        format!("${}", self.first + self.args.len() - 1)
    }
    fn text(&mut self, s: &str) -> String {
        self.bind(SqlArg::Text(s.to_owned()))
    }
    fn int(&mut self, n: i64) -> String {
        self.bind(SqlArg::I64(n))
    }
}

/// Compiles the filter to a WHERE fragment over `items i` (no `WHERE` keyword), with `$n`
/// placeholders from `ctx.next_param` and their values in order. Values are never spliced into
/// the SQL. An empty query gives `1 = 1`.
///
/// Columns (see `docs/query-language.md`): `i.id, i.project_id, i.type, i.state,
/// i.state_category, i.assignee_id, i.reporter_id, i.priority, i.title, i.description,
/// i.parent_id, i.epic_id, i.sprint_id, i.key, i.estimate, i.due_at, i.created_at,
/// i.updated_at`; tables `item_labels (item_id, label)`, `users (id, name)`,
/// `plan_sprints s (id, project_id, name, state)`. Times are Unix milliseconds, days are UTC.
///
/// `sprint:NAME` matches items planned into the sprint of that name, `sprint:current` those in
/// the project's active sprint, `sprint:none` those in the backlog (no sprint).
pub fn to_sql(query: &Query, ctx: &SqlContext) -> Result<(String, Vec<SqlArg>), QueryError> {
    let mut sql = Sql {
        args: Vec::new(),
        first: ctx.next_param.max(1),
    };
    let mut parts = Vec::new();
    for clause in &query.clauses {
        let alts: Vec<String> = clause
            .values
            .iter()
            .map(|v| condition(clause.field, v, ctx, &mut sql))
            .collect();
        let any = if alts.len() == 1 {
            alts[0].clone()
        } else {
            format!("({})", alts.join(" OR "))
        };
        parts.push(if clause.negated {
            // NULL-safe: a NULL column (no assignee, no due date) is "not X" too.
            format!("NOT COALESCE({any}, 1 = 0)")
        } else {
            any
        });
    }
    if parts.is_empty() {
        return Ok(("1 = 1".into(), sql.args));
    }
    Ok((parts.join(" AND "), sql.args))
}

/// `LIKE` pattern for a substring, with `%`, `_` and `\` escaped (used with `ESCAPE '\'`).
fn like_pattern(s: &str) -> String {
    let mut out = String::from("%");
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

fn item_column(field: Field) -> &'static str {
    match field {
        Field::Assignee => "i.assignee_id",
        Field::Reporter => "i.reporter_id",
        Field::Parent => "i.parent_id",
        Field::Epic => "i.epic_id",
        Field::Sprint => "i.sprint_id",
        Field::Priority => "i.priority",
        Field::Estimate => "i.estimate",
        Field::Due => "i.due_at",
        Field::Created => "i.created_at",
        Field::Updated => "i.updated_at",
        Field::Type => "i.type",
        Field::State => "i.state",
        Field::Category => "i.state_category",
        Field::Key => "i.key",
        Field::Label | Field::Text => "",
    }
}

fn condition(field: Field, v: &Value, ctx: &SqlContext, sql: &mut Sql) -> String {
    let col = item_column(field);
    match (field, v) {
        // Items store "no priority" as the text `none` (the column is NOT NULL).
        (Field::Priority, Value::None) => format!("{col} = {}", sql.text("none")),
        (_, Value::None) => format!("{col} IS NULL"),
        (_, Value::Me) => match ctx.me {
            Some(id) => format!("{col} = {}", sql.int(id)),
            None => "1 = 0".into(),
        },
        // An uncorrelated IN over the LOWER(label) index lets the planner start from the
        // label's items instead of testing every item of the project in rank order.
        // PostgreSQL spent 40 ms planning the semi-join among the item page's seven joins (3 ms
        // with the array form, which it evaluates once as an init plan; docs/benchmarks.md).
        (Field::Label, Value::Text { text }) => match ctx.backend {
            ouro_store::Backend::Postgres => format!(
                "i.id = ANY(ARRAY(SELECT l.item_id FROM item_labels l WHERE LOWER(l.label) = {}))",
                sql.text(text)
            ),
            ouro_store::Backend::Sqlite => format!(
                "i.id IN (SELECT l.item_id FROM item_labels l WHERE LOWER(l.label) = {})",
                sql.text(text)
            ),
        },
        (Field::Text, Value::Text { text }) => {
            let p = sql.text(&like_pattern(text));
            format!(
                "(LOWER(i.title) LIKE {p} ESCAPE '\\' OR LOWER(i.description) LIKE {p} ESCAPE '\\')"
            )
        }
        (Field::Type | Field::State, Value::Text { text }) => {
            format!("LOWER({col}) = {}", sql.text(text))
        }
        (Field::Assignee | Field::Reporter, Value::Text { text }) => {
            format!(
                "{col} IN (SELECT id FROM users WHERE name = {})",
                sql.text(text)
            )
        }
        // Sprint names are unique per project and compared case-insensitively.
        (Field::Sprint, Value::Text { text }) => format!(
            "{col} IN (SELECT s.id FROM plan_sprints s WHERE s.project_id = i.project_id \
             AND LOWER(s.name) = LOWER({}))",
            sql.text(text)
        ),
        (Field::Sprint, Value::Current) => format!(
            "{col} IN (SELECT s.id FROM plan_sprints s WHERE s.project_id = i.project_id \
             AND s.state = 'active')"
        ),
        (_, Value::Text { text }) => format!("{col} = {}", sql.text(text)),
        (_, Value::Category { category }) => format!("{col} = {}", sql.text(category.name())),
        (Field::Key, Value::ItemKey { key }) => format!("{col} = {}", sql.text(key)),
        (_, Value::ItemKey { key }) => {
            format!(
                "{col} IN (SELECT id FROM items WHERE key = {})",
                sql.text(key)
            )
        }
        (_, Value::Number { op, value }) => format!("{col} {} {}", op.symbol(), sql.int(*value)),
        (_, Value::Date { op, date }) => {
            let start = date.start_ms();
            let next = start + 86_400_000;
            match op {
                Cmp::Eq => format!(
                    "({col} >= {} AND {col} < {})",
                    sql.int(start),
                    sql.int(next)
                ),
                Cmp::Lt => format!("{col} < {}", sql.int(start)),
                Cmp::Le => format!("{col} < {}", sql.int(next)),
                Cmp::Gt => format!("{col} >= {}", sql.int(next)),
                Cmp::Ge => format!("{col} >= {}", sql.int(start)),
            }
        }
        (_, Value::Overdue) => format!(
            "({col} IS NOT NULL AND {col} < {} AND i.state_category <> 'done')",
            sql.int(ctx.now_ms)
        ),
        // The parser never pairs `current` with another field; match nothing rather than panic.
        (_, Value::Current) => "1 = 0".into(),
    }
}

/// The ORDER BY list (no keyword) for the query's sort keys, `i.rank` when there are none,
/// always ending with `i.id` so pages are stable. Empty values sort last in both directions.
pub fn order_by(query: &Query) -> String {
    let mut keys: Vec<String> = Vec::new();
    let default = [SortKey {
        field: SortField::Rank,
        descending: false,
    }];
    let sort = if query.sort.is_empty() {
        &default[..]
    } else {
        &query.sort[..]
    };
    for k in sort {
        let dir = if k.descending { "DESC" } else { "ASC" };
        let expr = match k.field {
            SortField::Rank => "i.rank".to_owned(),
            SortField::Created => "i.created_at".to_owned(),
            SortField::Updated => "i.updated_at".to_owned(),
            SortField::Due => "i.due_at".to_owned(),
            SortField::Estimate => "i.estimate".to_owned(),
            SortField::Key => "i.id".to_owned(),
            SortField::Title => "LOWER(i.title)".to_owned(),
            SortField::Priority => {
                let whens: String = PRIORITIES
                    .iter()
                    .enumerate()
                    .map(|(n, p)| format!(" WHEN '{p}' THEN {n}"))
                    .collect();
                // Highest first when ascending.
                format!("CASE i.priority{whens} ELSE {} END", PRIORITIES.len())
            }
        };
        // Portable NULLS LAST (SQLite and PostgreSQL disagree on the default).
        let nullable = match k.field {
            SortField::Due => Some("i.due_at"),
            SortField::Estimate => Some("i.estimate"),
            SortField::Priority => Some("i.priority"),
            _ => None,
        };
        if let Some(col) = nullable {
            keys.push(format!("{col} IS NULL"));
        }
        keys.push(format!("{expr} {dir}"));
    }
    keys.push("i.id ASC".into());
    keys.join(", ")
}

#[cfg(test)]
mod tests;
