//! Values of the expression language and the coercion rules (docs/expressions.md, "Types and
//! coercion").

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// A value: JSON's types, with numbers as `f64` (so `NaN` exists, as in GitHub Actions).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Value>),
    Object(BTreeMap<String, Value>),
}

impl Value {
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(a) => Value::Array(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// JSON form; integral numbers become JSON integers, `NaN` and infinities become `null`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => {
                if n.fract() == 0.0 && n.abs() < 9.0e15 {
                    serde_json::Value::from(*n as i64)
                } else {
                    serde_json::Number::from_f64(*n)
                        .map(serde_json::Value::Number)
                        .unwrap_or(serde_json::Value::Null)
                }
            }
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Array(a) => serde_json::Value::Array(a.iter().map(Value::to_json).collect()),
            Value::Object(o) => {
                serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// Truthiness: `null`, `false`, `0`, `-0`, `NaN` and `''` are falsy; everything else
    /// (arrays and objects included, even empty ones) is truthy.
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => *n != 0.0 && !n.is_nan(),
            Value::String(s) => !s.is_empty(),
            Value::Array(_) | Value::Object(_) => true,
        }
    }

    /// Number coercion: `null` 0, `true` 1, `false` 0, a string that is a number literal
    /// (decimal, exponent, `0x` hex, surrounding whitespace ignored) its value, `''` 0, any other
    /// string `NaN`, arrays and objects `NaN`.
    pub fn to_number(&self) -> f64 {
        match self {
            Value::Null => 0.0,
            Value::Bool(b) => {
                if *b {
                    1.0
                } else {
                    0.0
                }
            }
            Value::Number(n) => *n,
            Value::String(s) => parse_number(s.trim()).unwrap_or(f64::NAN),
            Value::Array(_) | Value::Object(_) => f64::NAN,
        }
    }

    /// String form, as `${{ }}` renders a value: `null` is `''`, booleans `true`/`false`,
    /// numbers without a trailing `.0`, strings as they are, arrays and objects as compact JSON.
    pub fn to_display(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => format_number(*n),
            Value::String(s) => s.clone(),
            Value::Array(_) | Value::Object(_) => self.to_json().to_string(),
        }
    }

    /// Property lookup on an object: exact key first, else case-insensitive.
    pub fn get_key(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(m) => m.get(key).or_else(|| {
                m.iter()
                    .find(|(k, _)| eq_ignore_case(k, key))
                    .map(|(_, v)| v)
            }),
            _ => None,
        }
    }

    /// Index lookup: a number indexes an array, anything else is a key of an object.
    pub fn get_index(&self, index: &Value) -> Option<&Value> {
        match (self, index) {
            (Value::Array(a), Value::Number(n)) => {
                if n.fract() == 0.0 && *n >= 0.0 && *n < a.len() as f64 {
                    a.get(*n as usize)
                } else {
                    None
                }
            }
            (Value::Array(_), _) => None,
            (Value::Object(_), i) => self.get_key(&i.to_display()),
            _ => None,
        }
    }
}

/// Formats a number: integers without a decimal point, others in the shortest form that reads
/// back the same; `NaN`, `Infinity`, `-Infinity`.
pub fn format_number(n: f64) -> String {
    if n.is_nan() {
        "NaN".into()
    } else if n.is_infinite() {
        if n > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else if n.fract() == 0.0 && n.abs() < 1e21 {
        if n == 0.0 {
            "0".into()
        } else {
            format!("{n:.0}")
        }
    } else {
        format!("{n}")
    }
}

/// Parses a number literal: optional `-`/`+`, decimal digits with optional fraction and
/// exponent (`1`, `1.5`, `.5`, `2e3`, `2.5E-3`), or hex `0x1F`. `None` when it is not one.
pub fn parse_number(s: &str) -> Option<f64> {
    if s.is_empty() {
        return Some(0.0);
    }
    let (neg, body) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let v = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()? as f64
    } else {
        let b = body.as_bytes();
        let mut i = 0;
        let mut digits = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
                digits += 1;
            }
        }
        if digits == 0 {
            return None;
        }
        if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
            i += 1;
            if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                i += 1;
            }
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return None;
            }
        }
        if i != b.len() {
            return None;
        }
        body.parse::<f64>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// Case-insensitive string equality (Unicode simple case folding via upper case).
pub fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.eq_ignore_ascii_case(b) || fold(a) == fold(b)
}

/// Case-insensitive ordering.
pub fn cmp_ignore_case(a: &str, b: &str) -> Ordering {
    fold(a).cmp(&fold(b))
}

pub fn fold(s: &str) -> String {
    s.to_uppercase()
}

/// Loose equality (`==`): same types compare by value (strings case-insensitively, arrays and
/// objects element by element); `NaN` equals nothing; otherwise both sides are coerced to
/// numbers, except that an array or object never equals a scalar.
pub fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => x == y,
        (Value::String(x), Value::String(y)) => eq_ignore_case(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| loose_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((k1, v1), (k2, v2))| k1 == k2 && loose_eq(v1, v2))
        }
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => false,
        _ => a.to_number() == b.to_number(),
    }
}

/// Ordering for `< <= > >=`: two strings compare case-insensitively, anything else as numbers;
/// `None` (every comparison false) when a side is `NaN`, an array or an object.
pub fn loose_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(cmp_ignore_case(x, y)),
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => None,
        _ => a.to_number().partial_cmp(&b.to_number()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_and_format() {
        assert_eq!(parse_number("0xff"), Some(255.0));
        assert_eq!(parse_number("-9.2"), Some(-9.2));
        assert_eq!(parse_number("2.99e-2"), Some(0.0299));
        assert_eq!(parse_number(".5"), Some(0.5));
        assert_eq!(parse_number("1e"), None);
        assert_eq!(parse_number("abc"), None);
        assert_eq!(parse_number("0x"), None);
        assert_eq!(parse_number("1.2.3"), None);
        assert_eq!(format_number(1.0), "1");
        assert_eq!(format_number(-0.0), "0");
        assert_eq!(format_number(1.5), "1.5");
        assert_eq!(format_number(1e21), "1000000000000000000000");
        assert_eq!(format_number(f64::NAN), "NaN");
        assert_eq!(format_number(f64::NEG_INFINITY), "-Infinity");
    }
}
