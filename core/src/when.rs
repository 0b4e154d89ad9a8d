//! When a schedule's occurrences fall: cron expressions (5 fields, or 6
//! with seconds first), the `@hourly`…`@yearly` names, and `@every
//! <duration>`, evaluated in an IANA time zone.
//!
//! Cron expressions match civil (wall-clock) time. A civil time skipped by a
//! DST change runs once at the shifted time (02:30 becomes 03:30); a civil
//! time repeated by one runs once, at its first instant. Occurrences never
//! drift: each is the first match strictly after the previous one's
//! *scheduled* time.

use crate::clock::Millis;
use crate::error::{Error, Result};
use jiff::civil::{Date, DateTime};
use jiff::tz::{Disambiguation, TimeZone};
use jiff::Timestamp;

/// Longest `@every` period: one year.
const MAX_EVERY_SECS: i64 = 366 * 86_400;
/// Years searched for a cron match before the expression is called impossible
/// (`0 0 30 2 *` never matches; `0 0 29 2 1` matches about every 28 years).
const SEARCH_YEARS: i16 = 30;

/// A parsed `when` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    /// A cron expression over civil time.
    Cron(Cron),
    /// Every `period` ms, in phase with the schedule's creation.
    Every(Millis),
}

/// The sets of values a cron expression matches, one bit per value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u64,
    /// Days of the month, 1–31.
    days: u64,
    /// Months, 1–12.
    months: u64,
    /// Days of the week, 0–6 from Sunday (7 is read as Sunday).
    weekdays: u64,
    /// Both day fields restricted: a day matches either (cron's rule).
    either_day: bool,
}

/// One cron field: its name for messages, its range, its value names.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

impl Field {
    const fn new(name: &'static str, min: u32, max: u32, names: &'static [&'static str]) -> Field {
        Field {
            name,
            min,
            max,
            names,
        }
    }
}

const SECOND: Field = Field::new("second", 0, 59, &[]);
const MINUTE: Field = Field::new("minute", 0, 59, &[]);
const HOUR: Field = Field::new("hour", 0, 23, &[]);
const DAY: Field = Field::new("day of month", 1, 31, &[]);
const MONTH: Field = Field::new(
    "month",
    1,
    12,
    &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
);
const WEEKDAY: Field = Field::new(
    "day of week",
    0,
    7,
    &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
);

fn invalid(when: &str, why: String) -> Error {
    Error::InvalidTask(format!("schedule '{when}': {why}"))
}

impl When {
    /// Parses a `when` expression; an InvalidTask error names what is wrong.
    pub fn parse(when: &str) -> Result<When> {
        let text = when.trim();
        if let Some(rest) = text.strip_prefix("@every") {
            let period = parse_duration(rest.trim())
                .map_err(|why| invalid(when, format!("@every {why}")))?;
            return Ok(When::Every(period));
        }
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 0 1 1 *",
            "@monthly" => "0 0 0 1 * *",
            "@weekly" => "0 0 0 * * 0",
            "@daily" | "@midnight" => "0 0 0 * * *",
            "@hourly" => "0 0 * * * *",
            t if t.starts_with('@') => {
                return Err(invalid(
                    when,
                    "unknown name (use @yearly, @monthly, @weekly, @daily, @hourly or \
                     @every <duration>)"
                        .into(),
                ))
            }
            t => t,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let fields: Vec<&str> = match fields.len() {
            5 => std::iter::once("0").chain(fields).collect(),
            6 => fields,
            n => {
                return Err(invalid(
                    when,
                    format!(
                        "a cron expression has 5 fields (minute hour day month weekday) or 6 \
                         (seconds first), this has {n}"
                    ),
                ))
            }
        };
        let parse =
            |i: usize, f: &Field| parse_field(fields[i], f).map_err(|why| invalid(when, why));
        let mut weekdays = parse(5, &WEEKDAY)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays & !(1 << 7)) | 1;
        }
        let (days_field, weekdays_field) = (fields[3], fields[5]);
        Ok(When::Cron(Cron {
            seconds: parse(0, &SECOND)?,
            minutes: parse(1, &MINUTE)?,
            hours: parse(2, &HOUR)?,
            days: parse(3, &DAY)?,
            months: parse(4, &MONTH)?,
            weekdays,
            either_day: !is_any(days_field) && !is_any(weekdays_field),
        }))
    }

    /// The first occurrence strictly after `after`. `phase` anchors `@every`
    /// (occurrences at `phase + k × period`). None when a cron expression
    /// never matches again (such as 30 February).
    pub fn next_after(&self, tz: &TimeZone, phase: Millis, after: Millis) -> Option<Millis> {
        match self {
            When::Every(period) => {
                let k = (after - phase).div_euclid(*period) + 1;
                Some(phase + k * period)
            }
            When::Cron(cron) => cron.next_after(tz, after),
        }
    }
}

fn is_any(field: &str) -> bool {
    field == "*" || field == "?"
}

/// Parses one field: `*`, `?`, values, names, ranges `a-b`, steps `/n`, lists.
fn parse_field(text: &str, f: &Field) -> std::result::Result<u64, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("{} step '{s}' is not a whole number above 0", f.name)
                })?;
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if is_any(range) {
            (f.min, f.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, f)?, value(b, f)?)
        } else {
            let v = value(range, f)?;
            // `5/15` means from 5 to the end in steps of 15.
            (v, if part.contains('/') { f.max } else { v })
        };
        if lo > hi {
            return Err(format!("{} range {range} runs backwards", f.name));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

fn value(text: &str, f: &Field) -> std::result::Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = f.names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + if f.min == 1 { 1 } else { 0 });
    }
    match text.parse::<u32>() {
        Ok(v) if (f.min..=f.max).contains(&v) => Ok(v),
        Ok(v) => Err(format!(
            "{} {v} is out of range ({}-{})",
            f.name, f.min, f.max
        )),
        Err(_) => Err(format!("'{text}' is not a valid {}", f.name)),
    }
}

/// Parses `1s`, `90s`, `1h30m`, `2d` (units d, h, m, s) into ms; whole
/// seconds, above 0, at most a year.
fn parse_duration(text: &str) -> std::result::Result<Millis, String> {
    if text.is_empty() {
        return Err("needs a duration, such as 30s, 5m or 1h30m".into());
    }
    let mut total: i64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(format!("'{text}': unknown unit '{c}' (use d, h, m, s)")),
        };
        let n: i64 = number
            .parse()
            .map_err(|_| format!("'{text}': a number must come before '{c}'"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!(
            "'{text}': the last number has no unit (use d, h, m, s)"
        ));
    }
    if total == 0 {
        return Err(format!(
            "'{text}' is no time at all: the period must be above 0"
        ));
    }
    if total > MAX_EVERY_SECS {
        return Err(format!("'{text}' is longer than a year"));
    }
    Ok(total * 1000)
}

/// Parses an IANA time zone name; an InvalidTask error when it is unknown.
pub fn time_zone(name: &str) -> Result<TimeZone> {
    if name.is_empty() {
        return Err(Error::InvalidTask(
            "timezone must be an IANA time zone name such as UTC or Europe/Berlin, got ''".into(),
        ));
    }
    TimeZone::get(name).map_err(|_| {
        Error::InvalidTask(format!(
            "timezone '{name}' is not a known IANA time zone name (such as UTC or Europe/Berlin)"
        ))
    })
}

fn has(bits: u64, v: i32) -> bool {
    v >= 0 && bits & (1 << v) != 0
}

impl Cron {
    fn day_matches(&self, d: Date) -> bool {
        let day = has(self.days, d.day().into());
        let weekday = has(self.weekdays, d.weekday().to_sunday_zero_offset().into());
        if self.either_day {
            day || weekday
        } else {
            day && weekday
        }
    }

    /// The first instant strictly after `after` whose civil time in `tz` matches.
    fn next_after(&self, tz: &TimeZone, after: Millis) -> Option<Millis> {
        let after_ts = Timestamp::from_millisecond(after).ok()?;
        // Whole seconds: the civil second after `after`'s own.
        let start = tz.to_datetime(after_ts);
        let mut t = start
            .with()
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(jiff::Span::new().seconds(1))
            .ok()?;
        let limit = start.year().saturating_add(SEARCH_YEARS);
        loop {
            let candidate = self.next_civil(t, limit)?;
            let instant = tz
                .to_ambiguous_zoned(candidate)
                .disambiguate(Disambiguation::Compatible)
                .ok()?
                .timestamp()
                .as_millisecond();
            // A gap's shifted time can land at or before `after`; keep looking.
            if instant > after {
                return Some(instant);
            }
            t = candidate.checked_add(jiff::Span::new().seconds(1)).ok()?;
        }
    }

    /// The first civil time at or after `t` that matches, before year `limit`.
    fn next_civil(&self, mut t: DateTime, limit: i16) -> Option<DateTime> {
        loop {
            if t.year() > limit {
                return None;
            }
            if !has(self.months, t.month().into()) {
                let first = t
                    .date()
                    .first_of_month()
                    .checked_add(jiff::Span::new().months(1))
                    .ok()?;
                t = first.to_datetime(jiff::civil::Time::midnight());
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t
                    .date()
                    .tomorrow()
                    .ok()?
                    .to_datetime(jiff::civil::Time::midnight());
                continue;
            }
            if !has(self.hours, t.hour().into()) {
                t = t
                    .with()
                    .minute(0)
                    .second(0)
                    .build()
                    .ok()?
                    .checked_add(jiff::Span::new().hours(1))
                    .ok()?;
                continue;
            }
            if !has(self.minutes, t.minute().into()) {
                t = t
                    .with()
                    .second(0)
                    .build()
                    .ok()?
                    .checked_add(jiff::Span::new().minutes(1))
                    .ok()?;
                continue;
            }
            if !has(self.seconds, t.second().into()) {
                t = t.checked_add(jiff::Span::new().seconds(1)).ok()?;
                continue;
            }
            return Some(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str, tz: &str) -> Millis {
        let dt: DateTime = s.parse().unwrap();
        dt.to_zoned(TimeZone::get(tz).unwrap())
            .unwrap()
            .timestamp()
            .as_millisecond()
    }

    fn civil(t: Millis, tz: &str) -> String {
        Timestamp::from_millisecond(t)
            .unwrap()
            .to_zoned(TimeZone::get(tz).unwrap())
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string()
    }

    /// The next `n` occurrences after `from` (civil, in `tz`).
    fn run(when: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let w = When::parse(when).unwrap();
        let zone = TimeZone::get(tz).unwrap();
        let mut t = ms(from, tz);
        (0..n)
            .map(|_| {
                t = w.next_after(&zone, 0, t).unwrap();
                civil(t, tz)
            })
            .collect()
    }

    #[test]
    fn five_fields_run_at_second_zero_and_six_fields_take_seconds_first() {
        assert_eq!(
            run("*/15 * * * *", "UTC", "2026-01-01T00:07:30", 3),
            [
                "2026-01-01 00:15:00 UTC",
                "2026-01-01 00:30:00 UTC",
                "2026-01-01 00:45:00 UTC"
            ]
        );
        assert_eq!(
            run("*/20 * * * * *", "UTC", "2026-01-01T00:00:00", 3),
            [
                "2026-01-01 00:00:20 UTC",
                "2026-01-01 00:00:40 UTC",
                "2026-01-01 00:01:00 UTC"
            ]
        );
    }

    #[test]
    fn names_lists_ranges_and_steps() {
        assert_eq!(
            run("0 9 * jan-mar mon,fri", "UTC", "2026-01-01T00:00:00", 3),
            [
                "2026-01-02 09:00:00 UTC",
                "2026-01-05 09:00:00 UTC",
                "2026-01-09 09:00:00 UTC"
            ]
        );
        assert_eq!(
            run("5/20 8-9 * * *", "UTC", "2026-03-01T00:00:00", 4),
            [
                "2026-03-01 08:05:00 UTC",
                "2026-03-01 08:25:00 UTC",
                "2026-03-01 08:45:00 UTC",
                "2026-03-01 09:05:00 UTC"
            ]
        );
        // 7 is Sunday too.
        assert_eq!(
            run("0 0 * * 7", "UTC", "2026-01-01T00:00:00", 1),
            ["2026-01-04 00:00:00 UTC"]
        );
    }

    #[test]
    fn both_day_fields_restricted_match_either() {
        // The 13th, or any Friday.
        assert_eq!(
            run("0 0 13 * fri", "UTC", "2026-02-01T00:00:00", 3),
            [
                "2026-02-06 00:00:00 UTC",
                "2026-02-13 00:00:00 UTC",
                "2026-02-20 00:00:00 UTC"
            ]
        );
    }

    #[test]
    fn named_schedules() {
        for (when, next) in [
            ("@hourly", "2026-05-05 11:00:00 UTC"),
            ("@daily", "2026-05-06 00:00:00 UTC"),
            ("@weekly", "2026-05-10 00:00:00 UTC"),
            ("@monthly", "2026-06-01 00:00:00 UTC"),
            ("@yearly", "2027-01-01 00:00:00 UTC"),
            ("0 0 29 2 *", "2028-02-29 00:00:00 UTC"),
        ] {
            assert_eq!(run(when, "UTC", "2026-05-05T10:20:00", 1), [next], "{when}");
        }
    }

    #[test]
    fn every_keeps_its_phase_whatever_the_previous_run_did() {
        let w = When::parse("@every 1h30m").unwrap();
        assert_eq!(w, When::Every(5_400_000));
        let phase = 1_000;
        // Asked from any point, the answer stays on phase + k × period.
        assert_eq!(
            w.next_after(&TimeZone::UTC, phase, phase),
            Some(phase + 5_400_000)
        );
        assert_eq!(
            w.next_after(&TimeZone::UTC, phase, phase + 5_399_999),
            Some(phase + 5_400_000)
        );
        assert_eq!(
            w.next_after(&TimeZone::UTC, phase, phase + 5_400_000),
            Some(phase + 10_800_000)
        );
        assert_eq!(When::parse("@every 90s").unwrap(), When::Every(90_000));
        assert_eq!(When::parse("@every 2d").unwrap(), When::Every(172_800_000));
    }

    #[test]
    fn a_skipped_local_time_runs_once_at_the_shifted_time() {
        // Europe/Berlin, 2026-03-29: 02:00 → 03:00.
        assert_eq!(
            run("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00", 3),
            [
                "2026-03-29 03:30:00 CEST",
                "2026-03-30 02:30:00 CEST",
                "2026-03-31 02:30:00 CEST"
            ]
        );
        // Every 15 minutes through the gap: no time twice, none lost but the gap's.
        assert_eq!(
            run("*/15 * * * *", "Europe/Berlin", "2026-03-29T01:40:00", 4),
            [
                "2026-03-29 01:45:00 CET",
                "2026-03-29 03:00:00 CEST",
                "2026-03-29 03:15:00 CEST",
                "2026-03-29 03:30:00 CEST"
            ]
        );
    }

    #[test]
    fn a_repeated_local_time_runs_once() {
        // Europe/Berlin, 2026-10-25: 03:00 → 02:00, so 02:30 happens twice.
        assert_eq!(
            run("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00", 2),
            ["2026-10-25 02:30:00 CEST", "2026-10-26 02:30:00 CET"]
        );
        // Hourly through the repeated hour: 02:00 once.
        assert_eq!(
            run("0 * * * *", "Europe/Berlin", "2026-10-25T00:30:00", 3),
            [
                "2026-10-25 01:00:00 CEST",
                "2026-10-25 02:00:00 CEST",
                "2026-10-25 03:00:00 CET"
            ]
        );
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let err = |w: &str| match When::parse(w) {
            Err(Error::InvalidTask(m)) => m,
            other => panic!("{w}: {other:?}"),
        };
        assert!(err("* * * *").contains("5 fields"), "{}", err("* * * *"));
        assert!(err("61 * * * *").contains("minute 61 is out of range (0-59)"));
        assert!(err("* 24 * * *").contains("hour 24 is out of range"));
        assert!(err("* * 0 * *").contains("day of month 0 is out of range (1-31)"));
        assert!(err("* * * foo *").contains("'foo' is not a valid month"));
        assert!(err("*/0 * * * *").contains("step '0'"));
        assert!(err("5-1 * * * *").contains("runs backwards"));
        assert!(err("@every 0s").contains("no time at all"));
        assert!(err("@every").contains("needs a duration"));
        assert!(err("@every 5").contains("no unit"));
        assert!(err("@every 5x").contains("unknown unit 'x'"));
        assert!(err("@every 400d").contains("longer than a year"));
        assert!(err("@fortnightly").contains("unknown name"));
        assert!(When::parse("0 0 30 2 *").is_ok());
        let never = When::parse("0 0 30 2 *").unwrap();
        assert_eq!(never.next_after(&TimeZone::UTC, 0, 0), None);
        assert!(
            matches!(time_zone("Mars/Olympus"), Err(Error::InvalidTask(m)) if m.contains("'Mars/Olympus'"))
        );
        assert!(time_zone("America/New_York").is_ok());
    }
}
