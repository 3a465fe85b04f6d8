//! Fractional ranks for the backlog: "move X between A and B" writes one row and never renumbers.
//!
//! A rank is a base-36 fraction `0.d1d2d3…` written as its digits `d1d2d3…` over the alphabet
//! `0-9a-z`. Two ranks compare as fractions exactly when they compare bytewise, because the
//! alphabet is in ASCII order and a rank never ends in `0` (so no two spellings share a value).
//! Ranks live in a TEXT column ordered with `ORDER BY rank`: only ASCII digits and lowercase
//! letters are used because they sort the same bytewise (SQLite's default BINARY collation) and
//! under PostgreSQL's default collations (C, and the ICU/glibc locales, which put digits before
//! letters and have no case or punctuation ties among these characters). A migration may still
//! declare the column `COLLATE "C"` on PostgreSQL to make that explicit.
//!
//! Because no rank ends in the minimum digit `0`, there is always room below any rank.
//!
//! Growth bound (tested): appending at the end or prepending at the front counts at the current
//! length and doubles it when full, so `n` such inserts give ranks of `O(log n)` characters: at
//! most 4 after 1,000 appends, 8 after 10,000 (see [`between`]'s tests). Bisecting the *same* gap `n` times costs one character per ~5 inserts
//! (`log2(36)` ≈ 5.17 bits per character): that is inherent to any dense ordering without
//! renumbering, so the items module may re-seed a backlog with [`initial`] when a rank grows past
//! a limit such as [`REBALANCE_LEN`].

use std::fmt;

/// The digits, in ascending (ASCII) order.
pub const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const BASE: u8 = 36;

/// A rank longer than this is a hint to re-seed the list with [`initial`]; nothing enforces it.
pub const REBALANCE_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RankError {
    #[error("malformed rank {0:?}: ranks are non-empty, use 0-9 and a-z, and do not end in 0")]
    Malformed(String),
    #[error("rank {before:?} is not below {after:?}")]
    NotOrdered { before: String, after: String },
}

/// Whether `s` is a well-formed rank.
pub fn is_valid(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| digit(b).is_some()) && !s.ends_with('0')
}

fn digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'z' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn digits(s: &str) -> Result<Vec<u8>, RankError> {
    if !is_valid(s) {
        return Err(RankError::Malformed(s.to_owned()));
    }
    Ok(s.bytes().filter_map(digit).collect())
}

fn encode(ds: &[u8]) -> String {
    ds.iter().map(|&d| ALPHABET[d as usize] as char).collect()
}

/// A rank strictly between `before` and `after`; `None` is an open end.
///
/// Errors if a bound is malformed or `before >= after`.
pub fn between(before: Option<&str>, after: Option<&str>) -> Result<String, RankError> {
    let a = before.map(digits).transpose()?;
    let b = after.map(digits).transpose()?;
    let ds = match (a, b) {
        (None, None) => vec![BASE / 2],
        (Some(a), None) => step_up(&a),
        (None, Some(b)) => step_down(&b),
        (Some(a), Some(b)) => {
            if a >= b {
                return Err(RankError::NotOrdered {
                    before: before.unwrap_or_default().to_owned(),
                    after: after.unwrap_or_default().to_owned(),
                });
            }
            midpoint(&a, Some(&b))
        }
    };
    Ok(encode(&ds))
}

/// A rank above `a` that keeps appends short. If the first digit has room, the single next digit
/// (`i` -> `j`, `i5k3` -> `j`). Otherwise count up at `a`'s own length (`zk3` -> `zk4`), and when
/// that length is used up (`zz`), double it (`zz01`): `n` appends then cost `O(log n)` characters,
/// where bumping the first free digit (`zz` -> `zz1`) would cost one character per 35.
fn step_up(a: &[u8]) -> Vec<u8> {
    if a[0] < BASE - 1 {
        return vec![a[0] + 1];
    }
    let mut out = a.to_vec();
    loop {
        // Add one at the last digit, carrying; all digits at the maximum = this length is full.
        let Some(i) = out.iter().rposition(|&d| d < BASE - 1) else {
            let mut out = a.to_vec();
            out.extend(std::iter::repeat_n(0, a.len() - 1));
            out.push(1);
            return out;
        };
        out[i] += 1;
        out[i + 1..].fill(0);
        // A rank may not end in 0: step once more (the next value ends in 1).
        if out.last() != Some(&0) {
            return out;
        }
    }
}

/// The mirror of [`step_up`]: the single digit below `b`'s first if that is 2 or more; else count
/// down at `b`'s length (`1ab` -> `1aa`, skipping values ending in 0), and below the smallest
/// value of that length (`01`) double the length with maximum digits (`00zz`).
fn step_down(b: &[u8]) -> Vec<u8> {
    if b[0] >= 2 {
        return vec![b[0] - 1];
    }
    let mut out = b.to_vec();
    while let Some(i) = out.iter().rposition(|&d| d > 0) {
        // Subtracting one from ...d00 gives ...(d-1)zz.
        out[i] -= 1;
        out[i + 1..].fill(BASE - 1);
        // A rank may not end in 0: step once more; all zeros is no rank at all.
        if out.last() != Some(&0) {
            return out;
        }
    }
    // b was 0...01, the smallest value of its length.
    let mut out = vec![0; b.len()];
    out.extend(std::iter::repeat_n(BASE - 1, b.len()));
    out
}

/// A value strictly between `a` (missing digits are 0) and `b` (`None` = 1.0); requires `a < b`
/// and neither ending in 0. The result ends in a non-zero digit.
fn midpoint(a: &[u8], b: Option<&[u8]>) -> Vec<u8> {
    let at = |i: usize| a.get(i).copied().unwrap_or(0);
    if let Some(b) = b {
        // Keep the common prefix (a padded with zeros); it ends before b does since b ends in a
        // non-zero digit and a < b.
        let n = b
            .iter()
            .enumerate()
            .take_while(|&(i, &d)| at(i) == d)
            .count();
        if n > 0 {
            let mut out = b[..n].to_vec();
            let rest_a = if n < a.len() { &a[n..] } else { &[][..] };
            out.extend(midpoint(rest_a, Some(&b[n..])));
            return out;
        }
    }
    let da = at(0);
    let db = b.map_or(BASE, |b| b[0]);
    if db - da > 1 {
        vec![(da + db) / 2]
    } else if let Some(b) = b.filter(|b| b.len() > 1) {
        // b = db.xxx with xxx > 0, so the single digit db is below b and above a.
        vec![b[0]]
    } else {
        let mut out = vec![da];
        let rest_a = if a.len() > 1 { &a[1..] } else { &[][..] };
        out.extend(midpoint(rest_a, None));
        out
    }
}

/// `n` ranks spread evenly over the whole range, in ascending order, all of the same short
/// length (before trailing zeros are dropped), for seeding or re-seeding a list.
pub fn initial(n: usize) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    // Smallest width whose range leaves a gap of at least 2 between neighbours.
    let need = (n as u128 + 1) * 2;
    let mut width = 1usize;
    let mut range: u128 = BASE as u128;
    while range < need {
        width += 1;
        range *= BASE as u128;
    }
    let step = range / (n as u128 + 1);
    (1..=n as u128)
        .map(|k| {
            let mut v = k * step;
            let mut ds = vec![0u8; width];
            for slot in ds.iter_mut().rev() {
                *slot = (v % BASE as u128) as u8;
                v /= BASE as u128;
            }
            while ds.last() == Some(&0) {
                ds.pop();
            }
            encode(&ds)
        })
        .collect()
}

/// A rank, validated on construction, for callers that want the type to carry the check.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank(String);

impl Rank {
    pub fn parse(s: &str) -> Result<Rank, RankError> {
        digits(s).map(|_| Rank(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Rank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(x: Option<&str>, y: Option<&str>) -> String {
        let r = between(x, y).unwrap();
        assert!(is_valid(&r), "{r:?}");
        if let Some(x) = x {
            assert!(x < r.as_str(), "{x:?} < {r:?}");
        }
        if let Some(y) = y {
            assert!(r.as_str() < y, "{r:?} < {y:?}");
        }
        r
    }

    #[test]
    fn examples() {
        assert_eq!(b(None, None), "i");
        assert_eq!(b(Some("i"), None), "j");
        assert_eq!(b(None, Some("i")), "h");
        assert_eq!(b(None, Some("1")), "0z");
        assert_eq!(b(None, Some("11")), "0z");
        assert_eq!(b(None, Some("0z")), "0y");
        assert_eq!(b(None, Some("01")), "00zz");
        assert_eq!(b(None, Some("1ab")), "1aa");
        assert_eq!(b(None, Some("1a1")), "19z");
        assert_eq!(b(Some("z"), None), "z1");
        assert_eq!(b(Some("zz"), None), "zz01");
        assert_eq!(b(Some("zkz"), None), "zl1");
        assert_eq!(b(Some("i5k3"), None), "j");
        assert_eq!(b(Some("zy"), None), "zz");
        assert_eq!(b(Some("a"), Some("c")), "b");
        assert_eq!(b(Some("a"), Some("b")), "ai");
        assert_eq!(b(Some("a"), Some("b1")), "b");
        assert_eq!(b(Some("1"), Some("1001")), "1000i");
        assert_eq!(b(Some("az"), Some("b")), "azi");
        assert_eq!(b(Some("0001"), Some("0002")), "0001i");
        b(Some("y"), Some("z"));
        b(Some("zy"), Some("zz"));
        b(Some("1"), Some("11"));
    }

    #[test]
    fn validity() {
        for ok in ["1", "i", "0z", "abc", "zzzz", "00001"] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", "0", "a0", "A", "a-b", "é", " i", "i "] {
            assert!(!is_valid(bad), "{bad:?}");
        }
        assert!(Rank::parse("a0").is_err());
        assert_eq!(Rank::parse("ab").unwrap().to_string(), "ab");
    }

    #[test]
    fn errors() {
        assert_eq!(
            between(Some("b"), Some("a")),
            Err(RankError::NotOrdered {
                before: "b".into(),
                after: "a".into()
            })
        );
        assert!(matches!(
            between(Some("a"), Some("a")),
            Err(RankError::NotOrdered { .. })
        ));
        assert!(matches!(
            between(Some("a0"), None),
            Err(RankError::Malformed(_))
        ));
        assert!(matches!(
            between(None, Some("")),
            Err(RankError::Malformed(_))
        ));
        assert!(matches!(
            between(None, Some("A")),
            Err(RankError::Malformed(_))
        ));
        assert_eq!(
            between(None, Some("0")).unwrap_err().to_string(),
            "malformed rank \"0\": ranks are non-empty, use 0-9 and a-z, and do not end in 0"
        );
    }

    #[test]
    fn initial_is_spread_sorted_and_short() {
        assert!(initial(0).is_empty());
        assert_eq!(initial(1), vec!["i"]);
        assert_eq!(initial(2), vec!["c", "o"]);
        for n in [1, 5, 17, 100, 647, 648, 5000] {
            let rs = initial(n);
            assert_eq!(rs.len(), n);
            assert!(rs.iter().all(|r| is_valid(r)), "{n}");
            assert!(rs.windows(2).all(|w| w[0] < w[1]), "{n}");
            // Width: smallest w with 36^w >= 2(n+1).
            let max = rs.iter().map(String::len).max().unwrap();
            assert!(
                36f64.powi(max as i32) < 2.0 * 36.0 * (n as f64 + 1.0),
                "{n}: {max}"
            );
            // Room before the first, between each pair, after the last.
            b(None, Some(&rs[0]));
            b(Some(&rs[n - 1]), None);
            if n > 1 {
                b(Some(&rs[0]), Some(&rs[1]));
            }
        }
    }

    #[test]
    fn growth_bounds() {
        // Appends and prepends: logarithmic growth.
        for (n, max_len) in [(50, 2), (1_000, 4), (10_000, 8)] {
            let mut last = b(None, None);
            for _ in 0..n {
                last = b(Some(&last), None);
            }
            assert!(last.len() <= max_len, "{n} appends: {last}");
            let mut first = b(None, None);
            for _ in 0..n {
                first = b(None, Some(&first));
            }
            assert!(first.len() <= max_len, "{n} prepends: {first}");
        }
        // Bisecting the same gap 1000 times, from both sides: ~1 char per 5.17 inserts.
        for toward_low in [true, false] {
            let (mut lo, mut hi) = ("a".to_owned(), "b".to_owned());
            for _ in 0..1000 {
                let m = b(Some(&lo), Some(&hi));
                if toward_low { hi = m } else { lo = m }
            }
            let len = lo.len().max(hi.len());
            assert!(len <= 1000 / 5 + 2, "{len}");
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Insert before position `idx % (len + 1)` (len = at the end).
        Insert(usize),
        /// Move the item at `from` to before position `to`.
        Move(usize, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<usize>().prop_map(Op::Insert),
            1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Op::Move(a, b)),
            // Hammer the ends and one gap, the worst cases for length.
            1 => Just(Op::Insert(0)),
            1 => Just(Op::Insert(usize::MAX)),
        ]
    }

    fn insert_at(list: &mut Vec<String>, pos: usize) {
        let lo = pos.checked_sub(1).map(|i| list[i].as_str());
        let hi = list.get(pos).map(String::as_str);
        let r = between(lo, hi).unwrap();
        list.insert(pos, r);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_edits_keep_order(ops in prop::collection::vec(op(), 1..3000)) {
            let mut list: Vec<String> = Vec::new();
            for op in &ops {
                match *op {
                    Op::Insert(i) => {
                        let pos = if i == usize::MAX { list.len() } else { i % (list.len() + 1) };
                        insert_at(&mut list, pos);
                    }
                    Op::Move(from, to) if !list.is_empty() => {
                        list.remove(from % list.len());
                        let pos = to % (list.len() + 1);
                        insert_at(&mut list, pos);
                    }
                    Op::Move(..) => {}
                }
            }
            prop_assert!(list.iter().all(|r| is_valid(r)));
            prop_assert!(list.windows(2).all(|w| w[0] < w[1]));
            // Random positions mostly bisect fresh gaps; the ends grow by 1 per 35. A loose
            // bound that still catches runaway growth.
            let max = list.iter().map(String::len).max().unwrap_or(0);
            prop_assert!(max <= 2 + ops.len() / 5, "max len {} after {} ops", max, ops.len());
        }

        #[test]
        fn between_any_two_valid(a in "[0-9a-z]{0,12}[1-9a-z]", b in "[0-9a-z]{0,12}[1-9a-z]") {
            prop_assume!(a != b);
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            let m = between(Some(&lo), Some(&hi)).unwrap();
            prop_assert!(is_valid(&m));
            prop_assert!(lo < m && m < hi, "{} < {} < {}", lo, m, hi);
            prop_assert!(m.len() <= hi.len().max(lo.len()) + 1);
        }

        #[test]
        fn open_ends_any_valid(a in "[0-9a-z]{0,12}[1-9a-z]") {
            let up = between(Some(&a), None).unwrap();
            prop_assert!(is_valid(&up) && up > a);
            let down = between(None, Some(&a)).unwrap();
            prop_assert!(is_valid(&down) && down < a);
        }

        #[test]
        fn never_panics(a in ".{0,8}", b in ".{0,8}", oa: bool, ob: bool) {
            let _ = between(oa.then_some(a.as_str()), ob.then_some(b.as_str()));
            let _ = is_valid(&a);
        }
    }
}
