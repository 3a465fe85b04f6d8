//! Matrix expansion: product order, exclude, include (GitHub's rules), the cap, names.

use ouro_build::matrix::{Combo, MAX_JOBS, MatrixError, expand, job_name, job_name_ordered};
use proptest::prelude::*;
use serde_json::{Value, json};

fn axes(v: Value) -> Vec<(String, Vec<Value>)> {
    // An array of [name, [values]] pairs keeps the order of the file.
    v.as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_string(),
                pair[1].as_array().unwrap().clone(),
            )
        })
        .collect()
}

fn maps(v: Value) -> Vec<Combo> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_object().unwrap().clone())
        .collect()
}

fn run(a: Value, include: Value, exclude: Value) -> Result<Value, MatrixError> {
    expand(&axes(a), &maps(include), &maps(exclude), MAX_JOBS)
        .map(|v| Value::Array(v.into_iter().map(Value::Object).collect()))
}

#[test]
fn product_in_file_order_first_axis_slowest() {
    let got = run(
        json!([["os", ["ubuntu", "windows"]], ["version", [10, 12, 14]]]),
        json!([]),
        json!([]),
    )
    .unwrap();
    assert_eq!(
        got,
        json!([
            {"os": "ubuntu", "version": 10},
            {"os": "ubuntu", "version": 12},
            {"os": "ubuntu", "version": 14},
            {"os": "windows", "version": 10},
            {"os": "windows", "version": 12},
            {"os": "windows", "version": 14},
        ])
    );
}

#[test]
fn exclude_is_a_partial_match() {
    let got = run(
        json!([
            ["os", ["macos", "windows"]],
            ["version", [12, 14, 16]],
            ["environment", ["staging", "production"]],
        ]),
        json!([]),
        json!([
            {"os": "macos", "version": 12, "environment": "production"},
            {"os": "windows", "version": 16},
        ]),
    )
    .unwrap();
    let got = got.as_array().unwrap();
    assert_eq!(got.len(), 12 - 1 - 2);
    assert!(!got.contains(&json!({"os": "macos", "version": 12, "environment": "production"})));
    assert!(got.contains(&json!({"os": "macos", "version": 12, "environment": "staging"})));
    assert!(
        !got.iter()
            .any(|c| c["os"] == "windows" && c["version"] == 16)
    );
    assert!(got.contains(&json!({"os": "windows", "version": 14, "environment": "production"})));
    // Order is the product's, with the excluded ones taken out.
    assert_eq!(
        got[0],
        json!({"os": "macos", "version": 12, "environment": "staging"})
    );
    assert_eq!(
        got[1],
        json!({"os": "macos", "version": 14, "environment": "staging"})
    );
}

/// The rules as GitHub documents them, on a case of our own: include extends every combination
/// whose axis values it does not change, added values may be overwritten by later entries, and
/// an entry that fits nowhere becomes its own combination (later entries never extend those).
#[test]
fn include_extends_or_adds() {
    let got = run(
        json!([["fruit", ["apple", "pear"]], ["animal", ["cat", "dog"]]]),
        json!([
            {"color": "green"},
            {"color": "pink", "animal": "cat"},
            {"fruit": "apple", "shape": "circle"},
            {"fruit": "banana"},
            {"fruit": "banana", "animal": "cat"},
        ]),
        json!([]),
    )
    .unwrap();
    assert_eq!(
        got,
        json!([
            {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
            {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
            {"fruit": "pear", "animal": "cat", "color": "pink"},
            {"fruit": "pear", "animal": "dog", "color": "green"},
            {"fruit": "banana"},
            {"fruit": "banana", "animal": "cat"},
        ])
    );
}

#[test]
fn include_adds_a_variable_to_one_combination() {
    let got = run(
        json!([["os", ["windows", "ubuntu"]], ["node", [14, 16]]]),
        json!([{"os": "windows", "node": 16, "npm": 6}]),
        json!([]),
    )
    .unwrap();
    assert_eq!(
        got,
        json!([
            {"os": "windows", "node": 14},
            {"os": "windows", "node": 16, "npm": 6},
            {"os": "ubuntu", "node": 14},
            {"os": "ubuntu", "node": 16},
        ])
    );
}

#[test]
fn include_that_changes_an_axis_value_is_a_new_job() {
    let got = run(
        json!([["os", ["ubuntu"]], ["rust", ["stable"]]]),
        json!([{"os": "ubuntu", "rust": "nightly", "experimental": true}]),
        json!([]),
    )
    .unwrap();
    assert_eq!(
        got,
        json!([
            {"os": "ubuntu", "rust": "stable"},
            {"os": "ubuntu", "rust": "nightly", "experimental": true},
        ])
    );
}

#[test]
fn include_only_matrix() {
    let got = run(
        json!([]),
        json!([{"site": "production", "datacenter": "site-a"}, {"site": "staging", "datacenter": "site-b"}]),
        json!([]),
    )
    .unwrap();
    assert_eq!(
        got,
        json!([
            {"site": "production", "datacenter": "site-a"},
            {"site": "staging", "datacenter": "site-b"},
        ])
    );
}

#[test]
fn include_does_not_extend_excluded_combinations() {
    let got = run(
        json!([["os", ["linux", "mac"]]]),
        json!([{"os": "mac", "arm": true}]),
        json!([{"os": "mac"}]),
    )
    .unwrap();
    // The excluded mac job is gone; the include fits no remaining job, so it is added back as
    // its own combination (GitHub's behaviour).
    assert_eq!(got, json!([{"os": "linux"}, {"os": "mac", "arm": true}]));
}

#[test]
fn object_values_match_whole() {
    let got = run(
        json!([["cfg", [{"cc": "gcc", "v": 12}, {"cc": "clang", "v": 17}]], ["opt", [0, 3]]]),
        json!([]),
        json!([{"cfg": {"cc": "clang", "v": 17}, "opt": 0}]),
    )
    .unwrap();
    assert_eq!(got.as_array().unwrap().len(), 3);
}

#[test]
fn the_cap() {
    // 20 x 20 = 400 > 256.
    let twenty: Vec<Value> = (0..20).map(|i| json!(i)).collect();
    let a = vec![
        ("a".to_string(), twenty.clone()),
        ("b".to_string(), twenty.clone()),
    ];
    let err = expand(&a, &[], &[], MAX_JOBS).unwrap_err();
    assert_eq!(
        err,
        MatrixError::TooLarge {
            size: 400,
            cap: 256
        }
    );
    assert_eq!(err.code(), "matrix.too_large");
    assert_eq!(
        err.to_string(),
        "the matrix would make 400 jobs; the limit is 256"
    );

    // Exactly at the cap is fine: 16 x 16.
    let sixteen: Vec<Value> = (0..16).map(|i| json!(i)).collect();
    let a = vec![
        ("a".to_string(), sixteen.clone()),
        ("b".to_string(), sixteen.clone()),
    ];
    assert_eq!(expand(&a, &[], &[], MAX_JOBS).unwrap().len(), 256);
    // One include more is over.
    let extra = maps(json!([{"a": 99}]));
    assert_eq!(
        expand(&a, &extra, &[], MAX_JOBS).unwrap_err(),
        MatrixError::TooLarge {
            size: 257,
            cap: 256
        }
    );
    // Exclude can bring a product under the cap: 20 x 20 less every b >= 12 = 240.
    let a = vec![
        ("a".to_string(), twenty.clone()),
        ("b".to_string(), twenty.clone()),
    ];
    let excl: Vec<Combo> = (12..20)
        .map(|b| json!({"b": b}).as_object().unwrap().clone())
        .collect();
    assert_eq!(expand(&a, &[], &excl, MAX_JOBS).unwrap().len(), 240);

    // A huge product is refused from its size alone (this would be 10^18 combinations).
    let thousand: Vec<Value> = (0..1000).map(|i| json!(i)).collect();
    let a: Vec<(String, Vec<Value>)> = (0..6)
        .map(|i| (format!("x{i}"), thousand.clone()))
        .collect();
    assert_eq!(
        expand(&a, &[], &[], MAX_JOBS).unwrap_err(),
        MatrixError::TooLarge {
            size: 1_000_000_000_000_000_000,
            cap: 256
        }
    );
    // Even one that overflows 128 bits.
    let a: Vec<(String, Vec<Value>)> = (0..20)
        .map(|i| (format!("x{i}"), thousand.clone()))
        .collect();
    assert!(matches!(
        expand(&a, &[], &[], MAX_JOBS),
        Err(MatrixError::TooLarge { .. })
    ));
}

#[test]
fn bad_matrices() {
    assert_eq!(
        run(json!([["os", []]]), json!([]), json!([])).unwrap_err(),
        MatrixError::EmptyAxis { axis: "os".into() }
    );
    assert_eq!(
        run(json!([["os", ["a"]], ["os", ["b"]]]), json!([]), json!([])).unwrap_err(),
        MatrixError::DuplicateAxis { axis: "os".into() }
    );
    let e = run(json!([["os", ["a"]]]), json!([]), json!([{"oss": "a"}])).unwrap_err();
    assert_eq!(e, MatrixError::ExcludeUnknownKey { key: "oss".into() });
    assert_eq!(e.code(), "matrix.exclude_unknown_key");
    assert_eq!(
        run(
            json!([["os", ["a", "b"]]]),
            json!([]),
            json!([{"os": "a"}, {"os": "b"}])
        )
        .unwrap_err(),
        MatrixError::Empty
    );
    assert_eq!(
        run(json!([]), json!([]), json!([])).unwrap_err(),
        MatrixError::Empty
    );
}

#[test]
fn job_names() {
    let combo = json!({"os": "linux", "rust": "1.80"})
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(job_name("build", &combo), "build (linux, 1.80)");
    assert_eq!(
        job_name_ordered("build", &combo, &["rust", "os"]),
        "build (1.80, linux)"
    );
    let combo = json!({"node": 16, "os": "windows", "npm": 6, "exp": true, "cfg": {"a": 1}})
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(
        job_name_ordered("test", &combo, &["os", "node"]),
        "test (windows, 16, {\"a\":1}, true, 6)"
    );
    assert_eq!(job_name("lint", &Combo::new()), "lint");
}

/// The example of docs/expressions.md ("Matrix"), result and names.
#[test]
fn docs_example() {
    let combos = expand(
        &axes(json!([
            ["os", ["linux", "mac"]],
            ["rust", ["1.80", "stable"]]
        ])),
        &maps(json!([{"rust": "stable", "coverage": true}, {"os": "windows", "rust": "stable"}])),
        &maps(json!([{"os": "mac", "rust": "1.80"}])),
        MAX_JOBS,
    )
    .unwrap();
    let names: Vec<String> = combos
        .iter()
        .map(|c| job_name_ordered("test", c, &["os", "rust"]))
        .collect();
    assert_eq!(
        names,
        [
            "test (linux, 1.80)",
            "test (linux, stable, true)",
            "test (mac, stable, true)",
            "test (windows, stable)",
        ]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Random small matrices: never a panic; without include the jobs are exactly the product
    /// less the excluded combinations, in product order; include never changes an axis value
    /// of a product combination; the cap holds.
    #[test]
    fn expansion_invariants(
        sizes in proptest::collection::vec(1usize..5, 0..4),
        excl in proptest::collection::vec(proptest::collection::vec((0usize..4, 0usize..5), 0..3), 0..3),
        incl in proptest::collection::vec(proptest::collection::vec((0usize..6, 0usize..5), 0..3), 0..4),
        cap in 1usize..40,
    ) {
        let axes: Vec<(String, Vec<Value>)> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("a{i}"), (0..*n).map(|v| json!(v)).collect()))
            .collect();
        let to_map = |pairs: &Vec<(usize, usize)>, limit: usize| -> Combo {
            pairs
                .iter()
                .filter(|(k, _)| *k < limit)
                .map(|(k, v)| (format!("a{k}"), json!(v)))
                .collect()
        };
        let exclude: Vec<Combo> = excl.iter().map(|p| to_map(p, sizes.len())).collect();
        let include: Vec<Combo> = incl.iter().map(|p| to_map(p, 6)).collect();

        // The product, by hand.
        let mut product: Vec<Combo> = vec![Combo::new()];
        for (name, values) in &axes {
            product = product
                .into_iter()
                .flat_map(|c| values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.insert(name.clone(), v.clone());
                    c
                }))
                .collect();
        }
        if axes.is_empty() {
            product.clear();
        }
        let kept: Vec<Combo> = product
            .into_iter()
            .filter(|c| !exclude.iter().any(|e| e.iter().all(|(k, v)| c.get(k) == Some(v))))
            .collect();

        match expand(&axes, &[], &exclude, cap) {
            Ok(got) => prop_assert_eq!(&got, &kept),
            Err(MatrixError::TooLarge { size, .. }) => {
                prop_assert!(kept.len() > cap);
                prop_assert_eq!(size, kept.len() as u128);
            }
            Err(MatrixError::Empty) => prop_assert!(kept.is_empty()),
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }

        if let Ok(got) = expand(&axes, &include, &exclude, cap) {
            prop_assert!(got.len() <= cap);
            // The first kept.len() jobs are the kept combinations, extended but not changed.
            prop_assert!(got.len() >= kept.len());
            for (g, k) in got.iter().zip(&kept) {
                for (key, v) in k {
                    prop_assert_eq!(g.get(key), Some(v));
                }
            }
        }
    }
}
