//! Secret masking of job logs: a streaming multi-pattern replacer over byte chunks.
//!
//! Every secret value is replaced by `***` in the log, and so are its encoded forms:
//! - the URL-encoded form (percent-encoding of every byte outside `A-Z a-z 0-9 - . _ ~`, with
//!   upper- and lower-case hex digits),
//! - the base64 forms (standard and URL-safe alphabets) at all three alignments. A secret embedded
//!   in a longer string starts at byte offset `k mod 3` of some 3-byte group; the base64 characters
//!   whose 6 bits all come from the secret are the same whatever surrounds it, so for each `k` the
//!   pattern is that run of characters (the one or two characters at either edge that mix in
//!   neighbouring bytes stay visible: they carry at most 4 bits of the secret each).
//!
//! Values shorter than [`MIN_SECRET_LEN`] bytes are refused as secrets: masking every `abc` in a
//! log would make it unreadable and would tell a reader where the short value occurs anyway.
//!
//! Streaming: [`Masker::push`] holds back at most `max_pattern_len - 1` bytes at the end of what it
//! has seen (a value may continue in the next chunk); [`Masker::finish`] flushes them. The output is
//! the same as masking the whole stream at once, however it is split into chunks. Matching is
//! leftmost-longest and non-overlapping, so the cost is linear in the log size.
//!
//! The search is SIMD Teddy (`aho_corasick::packed`) when the CPU and the number of patterns
//! allow, else an Aho-Corasick automaton without its prefilter. Neither one's speed depends on
//! the text: Teddy compares the first bytes of every pattern at once (over 7 GB/s here), the
//! bare automaton steps through every byte (about 620 MB/s). The automaton's default prefilter
//! looks for a few bytes it guesses are rare; in a log where those bytes are on every line (one
//! that prints the alphabet, or JSON, or hex) it stops at each line and falls to about 170 MB/s,
//! which was the limit of a job's log throughput (`examples/log_ingest.rs`, text `w4`).

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind, packed};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// The shortest value accepted as a secret, in bytes.
pub const MIN_SECRET_LEN: usize = 6;

/// What a masked value is replaced with.
pub const MASK: &[u8] = b"***";

/// A secret value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    /// The value at `index` is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error(
        "secret #{index} is {len} bytes long; values shorter than {MIN_SECRET_LEN} bytes cannot be secrets"
    )]
    TooShort { index: usize, len: usize },
}

impl MaskError {
    /// A stable error code (`build.` prefix, like the server's error table).
    pub fn code(&self) -> &'static str {
        match self {
            MaskError::TooShort { .. } => "build.secret_too_short",
        }
    }
}

/// The compiled set of patterns for a job's secrets. Cheap to share between maskers.
#[derive(Debug)]
pub struct SecretSet {
    finder: Option<Finder>,
    max_len: usize,
    /// The patterns, to hold back only a tail that could still become one.
    patterns: Vec<Vec<u8>>,
}

impl SecretSet {
    /// Compiles the patterns of `values` (raw, URL-encoded, base64 at all alignments).
    pub fn new<I, V>(values: I) -> Result<Arc<Self>, MaskError>
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        for (index, v) in values.into_iter().enumerate() {
            let v = v.as_ref();
            if v.len() < MIN_SECRET_LEN {
                return Err(MaskError::TooShort {
                    index,
                    len: v.len(),
                });
            }
            patterns.push(v.to_vec());
            for upper in [true, false] {
                let enc = url_encode(v, upper);
                if enc != v {
                    patterns.push(enc);
                }
            }
            for k in 0..3 {
                for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                    patterns.push(base64_core(v, k, engine));
                }
            }
        }
        patterns.sort();
        patterns.dedup();
        patterns.retain(|p| !p.is_empty());
        if patterns.is_empty() {
            return Ok(Self::empty());
        }
        let max_len = patterns.iter().map(Vec::len).max().unwrap_or(0);
        Ok(Arc::new(SecretSet {
            finder: Some(Finder::new(&patterns, Search::Fastest)),
            max_len,
            patterns,
        }))
    }

    /// A set with no secrets: masking is the identity.
    pub fn empty() -> Arc<Self> {
        Arc::new(SecretSet {
            finder: None,
            max_len: 0,
            patterns: Vec::new(),
        })
    }

    /// Whether there is anything to mask.
    pub fn is_empty(&self) -> bool {
        self.finder.is_none()
    }

    /// Whether the SIMD search is in use (else the automaton).
    pub fn is_packed(&self) -> bool {
        matches!(self.finder, Some(Finder::Packed(_)))
    }

    /// The same set searched with the automaton only (to compare the two searches in tests).
    #[doc(hidden)]
    pub fn with_automaton(&self) -> Arc<Self> {
        Arc::new(SecretSet {
            finder: (!self.patterns.is_empty())
                .then(|| Finder::new(&self.patterns, Search::Automaton)),
            max_len: self.max_len,
            patterns: self.patterns.clone(),
        })
    }

    /// Masks a complete text in one go.
    pub fn mask_all(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        match &self.finder {
            None => out.extend_from_slice(data),
            Some(f) => {
                let mut pos = 0;
                for (start, end) in f.find_iter(data) {
                    out.extend_from_slice(&data[pos..start]);
                    out.extend_from_slice(MASK);
                    pos = end;
                }
                out.extend_from_slice(&data[pos..]);
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy)]
enum Search {
    Fastest,
    Automaton,
}

/// Finds the patterns, leftmost-longest, non-overlapping: see the module docs.
#[derive(Debug)]
enum Finder {
    Packed(packed::Searcher),
    Automaton(AhoCorasick),
}

impl Finder {
    fn new(patterns: &[Vec<u8>], search: Search) -> Finder {
        if let Search::Fastest = search {
            let packed = packed::Config::new()
                .match_kind(packed::MatchKind::LeftmostLongest)
                .builder()
                .extend(patterns)
                .build();
            if let Some(p) = packed {
                return Finder::Packed(p);
            }
        }
        // Without the rare-bytes prefilter: slower on quiet text, but never slower than the
        // automaton itself whatever the text (see the module docs).
        let ac = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .prefilter(false)
            .build(patterns)
            .expect("secret patterns compile");
        Finder::Automaton(ac)
    }

    /// `(start, end)` of each match, in order.
    fn find_iter<'s, 'h>(&'s self, data: &'h [u8]) -> Matches<'s, 'h> {
        match self {
            Finder::Packed(p) => Matches::Packed(p.find_iter(data)),
            Finder::Automaton(ac) => Matches::Automaton(ac.find_iter(data)),
        }
    }
}

enum Matches<'s, 'h> {
    Packed(packed::FindIter<'s, 'h>),
    Automaton(aho_corasick::FindIter<'s, 'h>),
}

impl Iterator for Matches<'_, '_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        let m = match self {
            Matches::Packed(it) => it.next(),
            Matches::Automaton(it) => it.next(),
        }?;
        Some((m.start(), m.end()))
    }
}

/// Percent-encodes every byte outside the URL "unreserved" set.
fn url_encode(v: &[u8], upper: bool) -> Vec<u8> {
    let hex: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = Vec::with_capacity(v.len() * 3);
    for &b in v {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.push(b'%');
            out.push(hex[(b >> 4) as usize]);
            out.push(hex[(b & 15) as usize]);
        }
    }
    out
}

/// The base64 characters fully determined by `v` when it starts at byte `k` (0..3) of a 3-byte
/// group: encode `k` filler bytes + `v` + filler, keep the characters whose 6-bit window lies
/// entirely inside the bits of `v`.
fn base64_core(v: &[u8], k: usize, engine: &base64::engine::GeneralPurpose) -> Vec<u8> {
    let mut buf = vec![0u8; k];
    buf.extend_from_slice(v);
    buf.extend_from_slice(&[0, 0]);
    let enc = engine.encode(&buf).into_bytes();
    let bit_start = 8 * k;
    let bit_end = 8 * (k + v.len());
    let first = bit_start.div_ceil(6);
    let last = bit_end / 6; // exclusive: char i covers bits [6i, 6i+6)
    if last <= first {
        return Vec::new();
    }
    enc[first..last].to_vec()
}

/// A streaming masker for one log stream.
#[derive(Debug)]
pub struct Masker {
    set: Arc<SecretSet>,
    buf: Vec<u8>,
}

impl Masker {
    pub fn new(set: Arc<SecretSet>) -> Self {
        Masker {
            set,
            buf: Vec::new(),
        }
    }

    /// Bytes currently held back (at most the longest pattern minus one).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Masks `chunk`, appending what can be released to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let Some(finder) = &self.set.finder else {
            out.extend_from_slice(chunk);
            return;
        };
        let hold = self.set.max_len - 1;
        let data: &[u8] = if self.buf.is_empty() {
            chunk
        } else {
            self.buf.extend_from_slice(chunk);
            &self.buf
        };
        // Matches starting before `boundary` are complete in `data`: a pattern is at most
        // `hold + 1` bytes long. What starts later may continue in the next chunk.
        // Only a tail that is the start of some pattern is held back: a line with no secret in
        // it is released at once, so live logs never wait for more output (every server job
        // has a secret: its job token).
        let boundary = (data.len().saturating_sub(hold)..data.len())
            .find(|&p| {
                self.set
                    .patterns
                    .iter()
                    .any(|pat| pat.starts_with(&data[p..]))
            })
            .unwrap_or(data.len());
        let mut pos = 0;
        for (start, end) in finder.find_iter(data) {
            if start >= boundary {
                break;
            }
            out.extend_from_slice(&data[pos..start]);
            out.extend_from_slice(MASK);
            pos = end;
        }
        let cut = pos.max(boundary);
        out.extend_from_slice(&data[pos..cut]);
        let rest = data[cut..].to_vec();
        self.buf = rest;
    }

    /// Flushes the held-back bytes (end of stream).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let rest = std::mem::take(&mut self.buf);
        out.extend_from_slice(&self.set.mask_all(&rest));
    }
}
