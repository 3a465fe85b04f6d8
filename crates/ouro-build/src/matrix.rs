//! `strategy.matrix` expansion with GitHub Actions' semantics (docs/expressions.md, "Matrix").
//!
//! 1. The product of the axes, in order: the first axis varies slowest.
//! 2. `exclude`: every combination that matches an entry (all of the entry's keys equal, a
//!    partial match) is removed. Entries may only name axes.
//! 3. `include`, entry by entry: the entry's pairs are added to every combination (of the product)
//!    where they overwrite none of the combination's axis values; values added by an earlier
//!    entry may be overwritten. An entry that fits no combination becomes a combination of its
//!    own, appended at the end.
//!
//! The number of jobs is capped (256 in pipelines); a product far over the cap is refused from
//! the axis lengths alone, before anything is built, and the error says the size.

use serde_json::{Map, Value};

/// One combination: the `matrix` context of one job.
pub type Combo = Map<String, Value>;

/// The cap pipelines use.
pub const MAX_JOBS: usize = 256;

/// Products up to this size are built and filtered (exclude may bring them under the cap);
/// bigger ones are refused from their size alone.
const MAX_PRODUCT: u128 = 65_536;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatrixError {
    /// More jobs than the cap. `size` is the number it would have been (for a product refused
    /// before it was built: the size of the product).
    #[error("the matrix would make {size} jobs; the limit is {cap}")]
    TooLarge { size: u128, cap: usize },
    #[error("the matrix axis `{axis}` has no values")]
    EmptyAxis { axis: String },
    #[error("the matrix axis `{axis}` is defined twice")]
    DuplicateAxis { axis: String },
    #[error("`{key}` in matrix exclude is not an axis of the matrix")]
    ExcludeUnknownKey { key: String },
    #[error("the matrix makes no job (every combination is excluded and nothing is included)")]
    Empty,
}

impl MatrixError {
    /// A stable code for diagnostics.
    pub fn code(&self) -> &'static str {
        match self {
            MatrixError::TooLarge { .. } => "matrix.too_large",
            MatrixError::EmptyAxis { .. } => "matrix.empty_axis",
            MatrixError::DuplicateAxis { .. } => "matrix.duplicate_axis",
            MatrixError::ExcludeUnknownKey { .. } => "matrix.exclude_unknown_key",
            MatrixError::Empty => "matrix.empty",
        }
    }
}

/// Expands a matrix into its combinations (see the module docs for the rules).
pub fn expand(
    axes: &[(String, Vec<Value>)],
    include: &[Combo],
    exclude: &[Combo],
    cap: usize,
) -> Result<Vec<Combo>, MatrixError> {
    for (i, (name, values)) in axes.iter().enumerate() {
        if axes[..i].iter().any(|(n, _)| n == name) {
            return Err(MatrixError::DuplicateAxis { axis: name.clone() });
        }
        if values.is_empty() {
            return Err(MatrixError::EmptyAxis { axis: name.clone() });
        }
    }
    for entry in exclude {
        if let Some(key) = entry.keys().find(|k| !axes.iter().any(|(n, _)| n == *k)) {
            return Err(MatrixError::ExcludeUnknownKey { key: key.clone() });
        }
    }

    let product: u128 = if axes.is_empty() {
        0
    } else {
        axes.iter()
            .try_fold(1u128, |acc, (_, v)| acc.checked_mul(v.len() as u128))
            .unwrap_or(u128::MAX)
    };
    if product > MAX_PRODUCT && product > cap as u128 {
        return Err(MatrixError::TooLarge { size: product, cap });
    }

    // The product, less the excluded combinations.
    let mut combos: Vec<Combo> = Vec::new();
    if product > 0 {
        let mut idx = vec![0usize; axes.len()];
        'product: loop {
            let combo: Combo = axes
                .iter()
                .zip(&idx)
                .map(|((n, v), i)| (n.clone(), v[*i].clone()))
                .collect();
            if !exclude.iter().any(|e| partial_match(e, &combo)) {
                combos.push(combo);
            }
            // Odometer: the last axis varies fastest.
            let mut k = axes.len();
            loop {
                if k == 0 {
                    break 'product;
                }
                k -= 1;
                idx[k] += 1;
                if idx[k] < axes[k].1.len() {
                    break;
                }
                idx[k] = 0;
            }
        }
    }

    // Include: extend matching combinations, else append.
    let original = combos.len();
    let mut added: Vec<Combo> = Vec::new();
    for entry in include {
        let mut fitted = false;
        for combo in combos[..original].iter_mut() {
            let fits = entry.iter().all(|(k, v)| {
                !axes.iter().any(|(n, _)| n == k) || combo.get(k).is_none_or(|cv| cv == v)
            });
            if fits {
                fitted = true;
                for (k, v) in entry {
                    combo.insert(k.clone(), v.clone());
                }
            }
        }
        if !fitted {
            added.push(entry.clone());
        }
    }
    combos.extend(added);

    if combos.len() > cap {
        return Err(MatrixError::TooLarge {
            size: combos.len() as u128,
            cap,
        });
    }
    if combos.is_empty() {
        return Err(MatrixError::Empty);
    }
    Ok(combos)
}

/// True when every pair of `entry` is in `combo`.
fn partial_match(entry: &Combo, combo: &Combo) -> bool {
    entry.iter().all(|(k, v)| combo.get(k) == Some(v))
}

/// A matrix job's display name: `build (linux, 1.80)`. Values in the combination's key order
/// (sorted by key); see [`job_name_ordered`] to follow the axis order of the file.
pub fn job_name(base: &str, combo: &Combo) -> String {
    let keys: Vec<&str> = combo.keys().map(String::as_str).collect();
    job_name_ordered(base, combo, &keys)
}

/// `build (linux, 1.80)` with the values of `order`'s keys first, in that order, then any other
/// key of the combination (values added by `include`) in key order. Strings appear without
/// quotes, other values as compact JSON. An empty combination gives `base`.
pub fn job_name_ordered(base: &str, combo: &Combo, order: &[&str]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for k in order {
        if let Some(v) = combo.get(*k) {
            parts.push(display(v));
        }
    }
    for (k, v) in combo {
        if !order.contains(&k.as_str()) {
            parts.push(display(v));
        }
    }
    if parts.is_empty() {
        base.to_string()
    } else {
        format!("{base} ({})", parts.join(", "))
    }
}

fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
