//! Secret masking: plain, base64 at every alignment, URL-encoded, split across chunk boundaries,
//! short values refused.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use ouro_build::mask::{MIN_SECRET_LEN, MaskError, Masker, SecretSet};
use proptest::prelude::*;

fn stream(set: &std::sync::Arc<SecretSet>, chunks: &[&[u8]]) -> Vec<u8> {
    let mut m = Masker::new(set.clone());
    let mut out = Vec::new();
    for c in chunks {
        m.push(c, &mut out);
    }
    m.finish(&mut out);
    out
}

/// `text` cut at `cuts` (clamped, in any order): the chunks a stream might bring it in.
fn split_at(text: &[u8], cuts: Vec<usize>) -> Vec<&[u8]> {
    let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
    cuts.sort();
    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut last = 0;
    for c in cuts {
        chunks.push(&text[last..c]);
        last = c;
    }
    chunks.push(&text[last..]);
    chunks
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn plain_value_is_replaced() {
    let set = SecretSet::new(["hunter2-password"]).unwrap();
    let out = stream(&set, &[b"login with hunter2-password now\n"]);
    assert_eq!(out, b"login with *** now\n");
}

#[test]
fn short_values_are_refused() {
    let err = SecretSet::new(["long-enough", "abcde"]).unwrap_err();
    assert_eq!(err, MaskError::TooShort { index: 1, len: 5 });
    assert_eq!(err.code(), "build.secret_too_short");
    assert!(
        SecretSet::new(["abcdef"]).is_ok(),
        "{MIN_SECRET_LEN} bytes is enough"
    );
}

#[test]
fn no_secrets_pass_through() {
    let set = SecretSet::new(Vec::<String>::new()).unwrap();
    assert!(set.is_empty());
    assert_eq!(stream(&set, &[b"abc", b"def"]), b"abcdef");
}

#[test]
fn url_encoded_value_is_replaced() {
    let secret = "p@ss w/rd:1";
    let set = SecretSet::new([secret]).unwrap();
    let upper = "p%40ss%20w%2Frd%3A1";
    let lower = "p%40ss%20w%2frd%3a1";
    let out = stream(&set, &[format!("u={upper}&v={lower}\n").as_bytes()]);
    assert_eq!(out, b"u=***&v=***\n");
}

/// A secret inside a longer string at every offset mod 3, base64-encoded (standard and URL-safe,
/// with and without padding): the encoded secret's fully determined characters are masked, so at
/// most the few edge characters stay, and they never make up 4 consecutive characters of the
/// secret's own encoding.
#[test]
fn base64_at_every_alignment_is_masked() {
    let secret = b"s3cr3t-t0ken?>~value";
    let set = SecretSet::new([&secret[..]]).unwrap();
    for prefix_len in 0..6 {
        for suffix_len in 0..4 {
            let mut plain = vec![b'x'; prefix_len];
            plain.extend_from_slice(secret);
            plain.extend(std::iter::repeat_n(b'y', suffix_len));
            for engine in [&STANDARD, &URL_SAFE] {
                let enc = engine.encode(&plain);
                let line = format!("token: {enc}\n");
                let out = stream(&set, &[line.as_bytes()]);
                let out_s = String::from_utf8(out.clone()).unwrap();
                assert!(
                    out_s.contains("***"),
                    "prefix {prefix_len} suffix {suffix_len}: {line:?} -> {out_s:?}"
                );
                // What is left of the encoding is at most 2 + 2 edge characters + the neighbours'.
                let kept = out_s
                    .trim_start_matches("token: ")
                    .trim_end()
                    .replace("***", "");
                assert!(
                    kept.len() <= enc.len() - (secret.len() * 4 / 3 - 4),
                    "too much left: {out_s:?}"
                );
            }
        }
    }
}

#[test]
fn longest_match_wins_and_repeats_are_all_masked() {
    let set = SecretSet::new(["abcdef", "abcdefghij"]).unwrap();
    assert_eq!(
        stream(&set, &[b"abcdefghij abcdef abcdefabcdef"]),
        b"*** *** ******"
    );
}

#[test]
fn value_split_across_chunks_is_masked() {
    let secret = b"correct-horse-battery";
    let set = SecretSet::new([&secret[..]]).unwrap();
    let text = b"A correct-horse-battery B correct-horse-battery";
    for i in 0..=text.len() {
        for j in i..=text.len() {
            let out = stream(&set, &[&text[..i], &text[i..j], &text[j..]]);
            assert_eq!(out, b"A *** B ***", "split at {i},{j}");
        }
    }
}

#[test]
fn held_back_bytes_are_bounded() {
    let set = SecretSet::new(["0123456789"]).unwrap();
    let mut m = Masker::new(set);
    let mut out = Vec::new();
    for _ in 0..1000 {
        m.push(b"the quick brown fox jumps over the lazy dog ", &mut out);
        // The longest pattern is the URL-safe base64 / raw form: well under 20 bytes.
        assert!(m.pending() < 20, "pending {}", m.pending());
    }
    m.finish(&mut out);
    assert_eq!(out.len(), 1000 * 44);
}

proptest! {
    /// Streaming in arbitrary chunks gives exactly the one-shot result, and no secret is left.
    #[test]
    fn streaming_equals_one_shot(
        secrets in proptest::collection::vec("[a-c]{6,9}", 1..4),
        text in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'c'), Just(b'\n')], 0..300),
        cuts in proptest::collection::vec(0usize..300, 0..10),
    ) {
        let set = SecretSet::new(&secrets).unwrap();
        let whole = set.mask_all(&text);
        let chunks = split_at(&text, cuts);
        let got = stream(&set, &chunks);
        prop_assert_eq!(&got, &whole);
        // Each secret occurrence that is not overlapped by another one is gone.
        for s in &secrets {
            let pure = set.mask_all(s.as_bytes());
            prop_assert_eq!(pure, b"***".to_vec());
        }
        // Masking a text made only of secrets leaves nothing of them.
        let joined: Vec<u8> = secrets.iter().flat_map(|s| s.bytes().chain(*b" ")).collect();
        let m = set.mask_all(&joined);
        for s in &secrets {
            prop_assert!(!contains(&m, s.as_bytes()), "{:?} in {:?}", s, String::from_utf8_lossy(&m));
        }
    }
}

fn url_upper(v: &[u8]) -> String {
    v.iter()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(b) {
                (*b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

proptest! {
    /// A secret in any of its forms, inside random text, split at random places: the form is gone
    /// from the output (for base64, no 6 consecutive characters of any alignment's encoding
    /// survive).
    #[test]
    fn every_form_is_masked_across_random_chunks(
        secret in "[ -~]{6,24}",
        before in "[a-z ]{0,7}",
        after in "[a-z ]{0,7}",
        form in 0usize..3,
        cuts in proptest::collection::vec(0usize..200, 0..6),
    ) {
        let set = SecretSet::new([secret.as_bytes()]).unwrap();
        let inner = format!("{before}{secret}{after}");
        let text = match form {
            0 => format!("log: {inner} end\n"),
            1 => format!("url: https://x/?q={} end\n", url_upper(inner.as_bytes())),
            _ => format!("b64: {} end\n", STANDARD.encode(inner.as_bytes())),
        };
        let bytes = text.as_bytes();
        let chunks = split_at(bytes, cuts);
        let out = stream(&set, &chunks);
        prop_assert!(contains(&out, b"***"), "{:?} -> {:?}", text, String::from_utf8_lossy(&out));
        match form {
            0 => prop_assert!(!contains(&out, secret.as_bytes())),
            1 => prop_assert!(!contains(&out, url_upper(secret.as_bytes()).as_bytes())),
            _ => {
                for k in 0..3 {
                    let mut pre = vec![b'z'; k];
                    pre.extend_from_slice(secret.as_bytes());
                    let enc = STANDARD.encode(&pre);
                    // Characters 2..len-3 depend only on the secret (after the k filler bytes).
                    let core = &enc.as_bytes()[(k * 4).div_ceil(3) + 1..enc.len().saturating_sub(3)];
                    for w in core.windows(6) {
                        prop_assert!(!contains(&out, w), "{:?} survives in {:?}", String::from_utf8_lossy(w), String::from_utf8_lossy(&out));
                    }
                }
            }
        }
    }
}

/// A chunk whose tail cannot start a secret is released at once: a step that prints one line
/// and then waits must show that line live (every server job has a secret, its job token).
#[test]
fn output_that_cannot_start_a_secret_is_not_held_back() {
    let set = SecretSet::new(["s3cr3t-token-value-0123456789"]).unwrap();
    let mut m = Masker::new(set);
    let mut out = Vec::new();
    m.push(b"pid=1234\n", &mut out);
    assert_eq!(out, b"pid=1234\n");
    // A tail that may be the start of the secret waits for the next chunk, then is masked.
    out.clear();
    m.push(b"token s3cr3t-to", &mut out);
    assert_eq!(out, b"token ");
    m.push(b"ken-value-0123456789 done", &mut out);
    m.finish(&mut out);
    assert!(
        !contains(&out, b"s3cr3t"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

proptest! {
    /// The SIMD search and the automaton find the same matches: overlapping secrets, prefixes of
    /// one another, dense text, streamed in random chunks.
    #[test]
    fn simd_search_equals_the_automaton(
        secrets in proptest::collection::vec("[a-d]{6,12}", 1..6),
        text in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'c'), Just(b'd'), Just(b'\n')], 0..600),
        cuts in proptest::collection::vec(0usize..600, 0..10),
    ) {
        let set = SecretSet::new(&secrets).unwrap();
        let automaton = set.with_automaton();
        prop_assert!(!automaton.is_packed());
        prop_assert_eq!(set.mask_all(&text), automaton.mask_all(&text));
        let chunks = split_at(&text, cuts);
        prop_assert_eq!(stream(&set, &chunks), stream(&automaton, &chunks));
    }
}

/// A job's usual secrets (its API token and a few more, each in all its forms) are searched with
/// the SIMD search, whose speed does not depend on the log's text (see the module docs of
/// `ouro_build::mask`); and the text that made the automaton's prefilter slow is masked right.
#[test]
fn a_jobs_secrets_use_the_simd_search() {
    let token = "ourojob_12_6f1d3c0b9e7a4f25a8c1d6e3b2f09a7c4e5d8b1a3f6c9e2d7b0a5c8f1e4d7a2b";
    let set = SecretSet::new([token, "s3cr3t-password-value", "AKIAIOSFODNN7EXAMPLE"]).unwrap();
    if std::is_x86_feature_detected!("ssse3") {
        assert!(set.is_packed(), "Teddy builds on x86-64 with SSSE3");
    } else {
        eprintln!("no SSSE3 on this CPU: the automaton masks (slower on some texts)");
    }
    let line = "ouro log line 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n";
    let mut text = line.repeat(100);
    text.push_str(&format!("token={token}\n"));
    text.push_str(&line.repeat(100));
    let want = format!("{}token=***\n{}", line.repeat(100), line.repeat(100));
    let chunks: Vec<&[u8]> = text.as_bytes().chunks(4096).collect();
    assert_eq!(String::from_utf8(stream(&set, &chunks)).unwrap(), want);
    assert_eq!(set.mask_all(text.as_bytes()), want.as_bytes());
}
