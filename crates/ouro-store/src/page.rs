//! The pagination convention shared by every list: `?limit=N&cursor=C` in, and
//! `{"items":[...],"next_cursor":C|null}` out. Cursors are opaque to clients; here they are the
//! last key of the page (an id or a sequence number) as text.

use serde::Serialize;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// A page request after validation.
#[derive(Debug, Clone, Copy)]
pub struct PageReq {
    /// Items strictly after this key.
    pub after: i64,
    pub limit: i64,
}

impl Default for PageReq {
    fn default() -> Self {
        PageReq {
            after: 0,
            limit: DEFAULT_LIMIT,
        }
    }
}

impl PageReq {
    pub fn new(after: i64, limit: Option<i64>) -> PageReq {
        PageReq {
            after: after.max(0),
            limit: limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
        }
    }

    /// Builds the page from up to `limit + 1` fetched rows (the extra row says there is more).
    pub fn finish<T>(self, mut items: Vec<T>, key: impl Fn(&T) -> i64) -> Page<T> {
        let more = items.len() as i64 > self.limit;
        items.truncate(self.limit as usize);
        let next_cursor = if more {
            items.last().map(|i| key(i).to_string())
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}
