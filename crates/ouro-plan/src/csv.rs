//! CSV export and import of work items (docs/csv.md).
//!
//! Export writes RFC 4180 CSV and neutralises spreadsheet formulas: a cell starting with `=`,
//! `+`, `-` or `@` gets a leading `'`, so a spreadsheet shows it as text instead of running it.
//! Import understands Ouro's own export columns and Jira's export column names. It is all or
//! nothing: every row is checked first, then all items are created in one transaction (one
//! `item.created` each and one `items.imported` summary); a dry run does the same work in a
//! transaction that is rolled back, so its preview shows exactly what a real import would create.

use std::collections::HashMap;

use ouro_core::events as ev;
use ouro_core::{Actor, ErrorCode, NewEvent, OuroError};
use ouro_store::projects::Project;
use ouro_store::{Store, StoreError};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;

use crate::items::{self, Item, NewItem, Priority};

/// Largest accepted CSV body.
pub const MAX_BYTES: usize = 5 * 1024 * 1024;
/// Most data rows in one import.
pub const MAX_ROWS: usize = 10_000;

/// Export columns, in order.
pub const COLUMNS: [&str; 13] = [
    "key",
    "type",
    "title",
    "state",
    "priority",
    "assignee",
    "reporter",
    "labels",
    "estimate",
    "parent",
    "description",
    "created",
    "updated",
];

/// A cell as it is written: formula-looking text is prefixed with `'`, then quoted if needed.
pub fn cell(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@']) {
        format!("'{v}")
    } else {
        v.to_string()
    };
    if v.contains([',', '"', '\n', '\r']) || v.starts_with(' ') || v.ends_with(' ') {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

fn time(ms: i64) -> String {
    ouro_core::time::rfc3339(ms)
}

/// The header line and one line per item, CRLF-terminated.
pub fn export(items: &[Item]) -> String {
    let mut out = COLUMNS.join(",");
    out.push_str("\r\n");
    for i in items {
        let row = [
            i.key.clone(),
            i.item_type.clone(),
            i.title.clone(),
            i.state.clone(),
            i.priority.as_str().to_string(),
            i.assignee.clone().unwrap_or_default(),
            i.reporter.clone().unwrap_or_default(),
            i.labels.join(" "),
            i.estimate.map(|e| e.to_string()).unwrap_or_default(),
            i.parent.clone().unwrap_or_default(),
            i.description.clone(),
            time(i.created_at),
            time(i.updated_at),
        ];
        let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// Parses RFC 4180 CSV into records; quoted fields may hold commas, quotes and line breaks.
/// A stray quote inside an unquoted field is kept as text. Returns the record with its
/// 1-based record number (the header is record 1), or a message for an unterminated quote.
pub fn parse(text: &str) -> Result<Vec<Vec<String>>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    let mut field_started = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' if !field_started => {
                in_quotes = true;
                field_started = true;
            }
            ',' => {
                record.push(std::mem::take(&mut field));
                field_started = false;
            }
            '\r' | '\n' => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                record.push(std::mem::take(&mut field));
                field_started = false;
                if !(record.len() == 1 && record[0].is_empty()) {
                    records.push(std::mem::take(&mut record));
                } else {
                    record.clear();
                }
            }
            _ => {
                field.push(c);
                field_started = true;
            }
        }
    }
    if in_quotes {
        return Err(format!(
            "record {} has a quoted field that never ends",
            records.len() + 1
        ));
    }
    if field_started || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

/// One problem in an import file; `row` is the record number in the file (header = 1).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RowError {
    pub row: usize,
    pub column: String,
    pub message: String,
}

/// One item an import creates (or would create, in a dry run).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Imported {
    pub row: usize,
    pub item: Item,
    /// Notes about mapped values, e.g. an unknown status replaced by the first state.
    pub warnings: Vec<String>,
}

/// The outcome of an import.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ImportResult {
    pub dry_run: bool,
    pub created: usize,
    pub items: Vec<Imported>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Cols {
    key: Option<usize>,
    id: Option<usize>,
    item_type: Option<usize>,
    title: Option<usize>,
    state: Option<usize>,
    priority: Option<usize>,
    assignee: Option<usize>,
    estimate: Option<usize>,
    parent: Option<usize>,
    description: Option<usize>,
}

/// A checked row, ready to create.
struct Row {
    row: usize,
    file_key: Option<String>,
    file_id: Option<String>,
    input: NewItem,
    state: Option<String>,
    parent_ref: Option<String>,
    warnings: Vec<String>,
}

fn map_priority(v: &str) -> Option<Priority> {
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "none" => Some(Priority::None),
        "highest" | "blocker" | "critical" | "urgent" => Some(Priority::Critical),
        "high" | "major" => Some(Priority::High),
        "medium" | "normal" => Some(Priority::Medium),
        "low" | "lowest" | "minor" | "trivial" => Some(Priority::Low),
        _ => None,
    }
}

fn map_type(v: &str) -> String {
    match v.trim().to_ascii_lowercase().as_str() {
        "" => "story".into(),
        "sub-task" | "subtask" => "task".into(),
        "improvement" | "new feature" => "feature".into(),
        "user story" => "story".into(),
        other => other.to_string(),
    }
}

fn error(rows: Vec<RowError>) -> OuroError {
    let n = rows.len();
    OuroError::new(
        ErrorCode::ValidationFailed,
        format!("the file has {n} problem(s); nothing was imported"),
    )
    .with_details(json!({ "rows": rows }))
}

/// Imports `text` into `project`; see the module documentation.
pub async fn import(
    store: &Store,
    project: &Project,
    actor: &Actor,
    text: &str,
    dry_run: bool,
) -> Result<ImportResult, StoreError> {
    let bad = |row: usize, column: &str, message: String| {
        error(vec![RowError {
            row,
            column: column.into(),
            message,
        }])
    };
    if text.len() > MAX_BYTES {
        return Err(bad(0, "", format!("the file is larger than {MAX_BYTES} bytes")).into());
    }
    let mut records = parse(text).map_err(|m| bad(0, "", m))?;
    // Undo the export's formula guard so an export imports back unchanged.
    for v in records.iter_mut().flatten() {
        if v.starts_with('\'') && v[1..].starts_with(['=', '+', '-', '@']) {
            v.remove(0);
        }
    }
    let Some((header, data)) = records.split_first() else {
        return Err(bad(1, "", "the file is empty".into()).into());
    };
    if data.len() > MAX_ROWS {
        return Err(bad(0, "", format!("the file has more than {MAX_ROWS} rows")).into());
    }
    let mut c = Cols::default();
    let mut labels_cols = Vec::new();
    for (i, h) in header.iter().enumerate() {
        let slot = match h.trim().to_ascii_lowercase().as_str() {
            "key" | "issue key" => &mut c.key,
            "issue id" => &mut c.id,
            "type" | "issue type" => &mut c.item_type,
            "title" | "summary" => &mut c.title,
            "state" | "status" => &mut c.state,
            "priority" => &mut c.priority,
            "assignee" => &mut c.assignee,
            "estimate" | "story points" | "custom field (story points)" => &mut c.estimate,
            "parent" | "parent id" | "parent key" => &mut c.parent,
            "description" => &mut c.description,
            "labels" => {
                labels_cols.push(i);
                continue;
            }
            _ => continue,
        };
        slot.get_or_insert(i);
    }
    let Some(title_col) = c.title else {
        return Err(bad(1, "title", "no `title` or `Summary` column".into()).into());
    };
    let get = |r: &[String], col: Option<usize>| -> String {
        col.and_then(|i| r.get(i))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };

    let mut errors = Vec::new();
    let mut rows = Vec::new();
    for (n, r) in data.iter().enumerate() {
        let row = n + 2;
        let mut warnings = Vec::new();
        let title = r.get(title_col).map(|s| s.trim()).unwrap_or("");
        if title.is_empty() {
            errors.push(RowError {
                row,
                column: header[title_col].clone(),
                message: "the title is empty".into(),
            });
        } else if title.chars().count() > 300 {
            errors.push(RowError {
                row,
                column: header[title_col].clone(),
                message: "the title is longer than 300 characters".into(),
            });
        }
        let prio_text = get(r, c.priority);
        let priority = map_priority(&prio_text);
        if priority.is_none() {
            errors.push(RowError {
                row,
                column: "priority".into(),
                message: format!("unknown priority {prio_text:?}"),
            });
        }
        let est_text = get(r, c.estimate);
        let estimate = if est_text.is_empty() {
            None
        } else {
            match est_text.parse::<f64>() {
                Ok(v) if v >= 0.0 && v.fract() == 0.0 => Some(v as i64),
                Ok(v) if v >= 0.0 => {
                    warnings.push(format!("estimate {est_text} rounded up"));
                    Some(v.ceil() as i64)
                }
                _ => {
                    errors.push(RowError {
                        row,
                        column: "estimate".into(),
                        message: format!("{est_text:?} is not a number of story points"),
                    });
                    None
                }
            }
        };
        let mut labels = Vec::new();
        for &i in &labels_cols {
            if let Some(v) = r.get(i) {
                labels.extend(v.split_whitespace().map(str::to_string));
            }
        }
        let assignee = Some(get(r, c.assignee)).filter(|s| !s.is_empty());
        let state = Some(get(r, c.state)).filter(|s| !s.is_empty());
        rows.push(Row {
            row,
            file_key: Some(get(r, c.key)).filter(|s| !s.is_empty()),
            file_id: Some(get(r, c.id)).filter(|s| !s.is_empty()),
            input: NewItem {
                item_type: map_type(&get(r, c.item_type)),
                title: title.to_string(),
                description: c
                    .description
                    .and_then(|i| r.get(i))
                    .cloned()
                    .unwrap_or_default(),
                priority,
                assignee,
                estimate,
                labels,
                ..NewItem::default()
            },
            state,
            parent_ref: Some(get(r, c.parent)).filter(|s| !s.is_empty()),
            warnings,
        });
    }
    if !errors.is_empty() {
        return Err(error(errors).into());
    }

    // Parents inside the file are created before their children.
    let mut by_ref: HashMap<String, usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        for k in [&r.file_key, &r.file_id].into_iter().flatten() {
            by_ref.insert(k.clone(), i);
        }
    }
    let mut order = Vec::with_capacity(rows.len());
    let mut placed = vec![false; rows.len()];
    while order.len() < rows.len() {
        let before = order.len();
        for (i, r) in rows.iter().enumerate() {
            if placed[i] {
                continue;
            }
            let ready = match r.parent_ref.as_ref().and_then(|p| by_ref.get(p)) {
                Some(&p) => placed[p],
                None => true,
            };
            if ready {
                placed[i] = true;
                order.push(i);
            }
        }
        if order.len() == before {
            let row = rows
                .iter()
                .enumerate()
                .find(|(i, _)| !placed[*i])
                .unwrap()
                .1;
            return Err(bad(
                row.row,
                "parent",
                "the parent references form a cycle".into(),
            )
            .into());
        }
    }

    let mut tx = store.begin().await?;
    let mut new_keys: HashMap<usize, String> = HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for i in order {
        let r = &rows[i];
        let mut input = r.input.clone();
        input.parent = match r.parent_ref.as_ref() {
            Some(p) => match by_ref.get(p) {
                Some(j) => new_keys.get(j).cloned(),
                None => Some(p.clone()),
            },
            None => None,
        };
        let mut warnings = r.warnings.clone();
        // An unknown status starts the item in its workflow's first state, with a warning.
        let state = match r.state.as_deref() {
            Some(s) => {
                let ty =
                    crate::workflow::item_type(&mut tx, project.id, input.item_type.trim()).await?;
                let known = match ty {
                    Some(t) => crate::workflow::states(&mut tx, project.id, &t.workflow)
                        .await?
                        .iter()
                        .any(|st| st.name.eq_ignore_ascii_case(s)),
                    None => false,
                };
                if known {
                    Some(s.to_string())
                } else {
                    warnings.push(format!(
                        "unknown status {s:?}: the item starts in its workflow's first state"
                    ));
                    None
                }
            }
            None => None,
        };
        let item = match items::create_in_tx(&mut tx, project, actor, input, state.as_deref()).await
        {
            Ok(item) => item,
            Err(StoreError::Domain(e)) => {
                let column = e
                    .details
                    .as_ref()
                    .and_then(|d| d["field"].as_str())
                    .unwrap_or("")
                    .to_string();
                return Err(error(vec![RowError {
                    row: r.row,
                    column,
                    message: e.message,
                }])
                .into());
            }
            Err(e) => return Err(e),
        };
        new_keys.insert(i, item.key.clone());
        out.push(Imported {
            row: r.row,
            item,
            warnings,
        });
    }
    out.sort_by_key(|i| i.row);
    tx.append(
        NewEvent::new(
            ev::ITEMS_IMPORTED,
            actor,
            project.id,
            json!({
                "count": out.len(),
                "keys": out.iter().map(|i| i.item.key.clone()).collect::<Vec<_>>(),
            }),
        )
        .in_project(project.id, &project.slug),
    )
    .await?;
    if dry_run {
        drop(tx);
    } else {
        tx.commit().await?;
    }
    Ok(ImportResult {
        dry_run,
        created: out.len(),
        items: out,
    })
}
