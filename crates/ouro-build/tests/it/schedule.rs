//! Schedule times: `schedule::next_after` with an injected clock, in UTC, with croner's `L`,
//! `W` and `#`, seconds as an optional sixth field, and invalid expressions.

use ouro_build::schedule::next_after;

/// Ms since the epoch of a UTC date and time.
fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(y, mo, d)
        .unwrap()
        .and_hms_opt(h, mi, s)
        .unwrap()
        .and_utc()
        .timestamp_millis()
}

#[test]
fn the_next_time_is_strictly_after_the_clock_in_utc() {
    let now = at(2026, 11, 27, 6, 30, 0);
    assert_eq!(
        next_after("0 3 * * *", now),
        Some(at(2026, 11, 28, 3, 0, 0))
    );
    assert_eq!(
        next_after("*/5 * * * *", now),
        Some(at(2026, 11, 27, 6, 35, 0))
    );
    // Exactly on a match: the next one, never the same instant twice.
    let three = at(2026, 11, 28, 3, 0, 0);
    assert_eq!(
        next_after("0 3 * * *", three),
        Some(at(2026, 11, 29, 3, 0, 0))
    );
    // Six fields: seconds first.
    assert_eq!(
        next_after("30 0 7 * * *", now),
        Some(at(2026, 11, 27, 7, 0, 30))
    );
}

#[test]
fn last_weekday_and_nth_weekday_are_understood() {
    let now = at(2026, 11, 27, 6, 30, 0);
    // L: the last day of the month.
    assert_eq!(
        next_after("0 0 L * *", now),
        Some(at(2026, 11, 30, 0, 0, 0))
    );
    // W: the weekday nearest the 15th of December 2026 (a Tuesday).
    assert_eq!(
        next_after("0 0 15W * *", now),
        Some(at(2026, 12, 15, 0, 0, 0))
    );
    // #: the first Monday of the month (December 7th, 2026).
    assert_eq!(
        next_after("0 9 * * MON#1", now),
        Some(at(2026, 12, 7, 9, 0, 0))
    );
}

#[test]
fn an_invalid_expression_has_no_next_time() {
    assert_eq!(next_after("not cron", 0), None);
    assert_eq!(next_after("61 * * * *", 0), None);
}
