//! A YAML document as a tree of nodes with positions, read through serde-saphyr (YAML 1.2 core
//! schema, budgets, duplicate and merge keys refused). The checker walks this tree so that it can
//! report every problem with its line and column, not only the first one serde would stop at.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::diag::{self, Diagnostic};

/// A node with the position where it appears (for an alias: where the alias is used).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub v: V,
    pub line: u32,
    pub col: u32,
    /// Width in characters (scalars on one line), otherwise 1.
    pub len: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum V {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A human description for messages ("a list", "a string", ...).
    pub fn describe(&self) -> &'static str {
        match self.v {
            V::Null => "nothing (null)",
            V::Bool(_) => "a boolean",
            V::Int(_) => "an integer",
            V::Float(_) => "a number",
            V::Str(_) => "a string",
            V::Seq(_) => "a list",
            V::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.v {
            V::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A scalar as text (keys, messages).
    pub fn scalar_text(&self) -> Option<String> {
        match &self.v {
            V::Str(s) => Some(s.clone()),
            V::Bool(b) => Some(b.to_string()),
            V::Int(i) => Some(i.to_string()),
            V::Float(f) => Some(f.to_string()),
            V::Null => Some("null".into()),
            _ => None,
        }
    }

    pub fn map(&self) -> Option<&[(Node, Node)]> {
        match &self.v {
            V::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn seq(&self) -> Option<&[Node]> {
        match &self.v {
            V::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The value under a string key of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node and value under a string key of a mapping.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        self.map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, v)| (k, v))
    }

    /// A scalar or a list of scalars, as (text, node) pairs (numbers and booleans as their text,
    /// as the typed parse reads them); other shapes give nothing (the schema check reports them).
    pub fn strings(&self) -> Vec<(String, &Node)> {
        let one = |n: &Node| match n.v {
            V::Null | V::Seq(_) | V::Map(_) => None,
            _ => n.scalar_text(),
        };
        match &self.v {
            V::Seq(items) => items
                .iter()
                .filter_map(|n| one(n).map(|s| (s, n)))
                .collect(),
            _ => one(self).map(|s| (s, self)).into_iter().collect(),
        }
    }

    pub fn diag(&self, file: &str, code: &'static str, message: String) -> Diagnostic {
        Diagnostic::error(file, self.line, self.col, code, message).with_len(self.len)
    }

    /// The entries of this mapping whose keys are in `allowed`, in file order. Every other key
    /// is reported as `codes.0` (unknown key, with a "did you mean" suggestion), a value that is
    /// not a mapping as `codes.1` (invalid type). A null node is an empty mapping (`health:`
    /// with nothing under it). `what` names the mapping in messages ("service `web`").
    pub fn allowed_entries(
        &self,
        file: &str,
        allowed: &[&str],
        what: &str,
        codes: (&'static str, &'static str),
        diags: &mut Vec<Diagnostic>,
    ) -> Vec<(String, &Node)> {
        let Some(map) = self.map() else {
            if !matches!(self.v, V::Null) {
                let m = format!("{what} must be a mapping, not {}", self.describe());
                diags.push(self.diag(file, codes.1, m));
            }
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in map {
            let key = k.scalar_text().unwrap_or_default();
            if allowed.contains(&key.as_str()) {
                out.push((key, v));
            } else {
                let mut d = k.diag(file, codes.0, format!("unknown key `{key}` in {what}"));
                d.label = Some("unknown key".into());
                d.help = Some(match diag::did_you_mean(&key, allowed) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None => format!("allowed keys: {}", allowed.join(", ")),
                });
                diags.push(d);
            }
        }
        out
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<V>::deserialize(d)?;
        let loc = s.referenced;
        let len = match &s.value {
            V::Seq(_) | V::Map(_) => 1,
            _ => loc.span().len().clamp(1, u64::from(u32::MAX)) as u32,
        };
        Ok(Node {
            v: s.value,
            line: loc.line() as u32,
            col: loc.column() as u32,
            len,
        })
    }
}

impl<'de> Deserialize<'de> for V {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(VVisitor)
    }
}

struct VVisitor;

impl<'de> Visitor<'de> for VVisitor {
    type Value = V;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<V, E> {
        Ok(V::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<V, E> {
        Ok(V::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<V, E> {
        Ok(V::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<V, E> {
        Ok(V::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<V, E> {
        Ok(V::Int(i128::try_from(v).unwrap_or(i128::MAX)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V, E> {
        Ok(V::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<V, E> {
        Ok(V::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<V, E> {
        Ok(V::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<V, E> {
        Ok(V::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<V, E> {
        Ok(V::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<V, E> {
        Ok(V::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V, D::Error> {
        V::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<V, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(V::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<V, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<Node>()? {
            let v = map.next_value::<Node>()?;
            entries.push((k, v));
        }
        Ok(V::Map(entries))
    }
}

/// The limits that keep a hostile file from costing more than a small one.
pub const MAX_DEPTH: usize = 64;
pub const MAX_NODES: usize = 100_000;
pub const MAX_ALIAS_REPLAY: usize = 10_000;

pub fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_nodes: MAX_NODES,
            max_documents: 1,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_ALIAS_REPLAY,
            max_replay_stack_depth: 16,
        },
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        merge_keys: serde_saphyr::MergeKeyPolicy::Error,
        // YAML 1.2 core: `on`, `yes`, `no` are strings, not booleans.
        strict_booleans: true,
    }
}

/// Turns a serde-saphyr error into one diagnostic with a stable code.
pub fn error_to_diag(file: &str, err: &serde_saphyr::Error) -> Diagnostic {
    use serde_saphyr::Error as E;
    let mut inner = err;
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let loc = err
        .location()
        .filter(|l| l.line() > 0)
        .or_else(|| inner.location())
        .filter(|l| l.line() > 0);
    let (line, col) = loc
        .map(|l| (l.line() as u32, l.column() as u32))
        .unwrap_or((1, 1));
    let mut text = inner.to_string();
    // serde-saphyr appends " at line L column C"; the diagnostic carries the position itself.
    if let Some(i) = text.find(" at line ") {
        text.truncate(i);
    }
    let text = text.lines().next().unwrap_or("").trim().to_string();
    let d = |code, msg: String| Diagnostic::error(file, line, col, code, msg);
    match inner {
        E::DuplicateMappingKey { key, .. } => d(
            diag::DUPLICATE_KEY,
            match key {
                Some(k) => format!("duplicate key `{k}`"),
                None => "duplicate key".to_string(),
            },
        )
        .with_len(key.as_ref().map_or(1, |k| k.chars().count() as u32))
        .with_label("repeated here")
        .with_help("each key may appear once in a mapping; remove or rename one of them"),
        E::MergeKeyNotAllowed { .. } | E::MergeValueNotMapOrSeqOfMaps { .. } => d(
            diag::MERGE_KEY,
            "merge keys (`<<`) are not supported".to_string(),
        )
        .with_len(2)
        .with_help(
            "repeat the keys, or put an anchor on a whole value and reuse it with an alias (`*name`)",
        ),
        E::Budget { .. }
        | E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. }
        | E::AliasReplayCounterOverflow { .. } => d(
            diag::YAML_BUDGET,
            format!("the YAML exceeds a parsing budget: {text}"),
        )
        .with_help(format!(
            "pipeline files may nest at most {MAX_DEPTH} levels, hold at most {MAX_NODES} nodes and expand aliases to at most {MAX_ALIAS_REPLAY} events"
        )),
        _ if text.contains("recursion limit") || text.contains("depth limit") => d(
            diag::YAML_BUDGET,
            format!("the YAML nests too deeply: {text}"),
        )
        .with_help(format!("pipeline files may nest at most {MAX_DEPTH} levels")),
        E::MultipleDocuments { .. } => d(
            diag::YAML_SYNTAX,
            "a pipeline file holds exactly one YAML document".to_string(),
        )
        .with_help("remove the `---` separator and the second document"),
        _ => d(diag::YAML_SYNTAX, format!("invalid YAML: {text}")),
    }
}

/// Reads the text as one YAML node tree, or the diagnostic of the first syntax problem.
pub fn read(file: &str, text: &str) -> Result<Node, Vec<Diagnostic>> {
    serde_saphyr::from_str_with_options::<Node>(text, options())
        .map_err(|e| vec![error_to_diag(file, &e)])
}
