//! Wall-clock time as stored and shown: nanoseconds since the Unix epoch, printed as RFC 3339.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn now_unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Formats nanoseconds since the epoch as RFC 3339 UTC with nanoseconds, e.g.
/// `2026-11-22T14:03:07.123456789Z`.
pub fn rfc3339(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let second_of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (
        second_of_day / 3600,
        (second_of_day % 3600) / 60,
        second_of_day % 60,
    );
    if !(0..=9999).contains(&year) {
        return format!(
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{nanos:09}Z"
        );
    }
    // Every audit record and most answers carry one: written digit by digit.
    let mut text = String::with_capacity(30);
    push_digits(&mut text, year, 4);
    text.push('-');
    push_digits(&mut text, i64::from(month), 2);
    text.push('-');
    push_digits(&mut text, i64::from(day), 2);
    text.push('T');
    push_digits(&mut text, hour, 2);
    text.push(':');
    push_digits(&mut text, minute, 2);
    text.push(':');
    push_digits(&mut text, second, 2);
    text.push('.');
    push_digits(&mut text, nanos, 9);
    text.push('Z');
    text
}

/// Appends the `width` lowest decimal digits of `value` (non-negative), zero-padded.
fn push_digits(text: &mut String, value: i64, width: u32) {
    for place in (0..width).rev() {
        let digit = (value / 10i64.pow(place)) % 10;
        text.push(char::from_digit(digit as u32, 10).unwrap_or('0'));
    }
}

/// Parses RFC 3339 (`2026-11-22T14:03:07Z`, optional fraction, `Z` or `±HH:MM`) into
/// nanoseconds since the epoch; `None` if it is not such a time. User input (`expires_at`,
/// `rotate_by`, audit filters) comes through here, so it is parsed by the `time` crate, which
/// refuses days a month does not have (2026-02-31), offsets beyond ±23:59 and malformed signs.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let parsed =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(parsed.unix_timestamp_nanos()).ok()
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
        assert_eq!(
            rfc3339(1_795_359_787_123_456_789),
            "2026-11-22T15:03:07.123456789Z"
        );
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        for nanos in [
            0,
            951_782_400_000_000_001,
            1_795_359_787_123_456_789,
            -86_400_000_000_000,
        ] {
            assert_eq!(super::parse_rfc3339(&rfc3339(nanos)), Some(nanos));
        }
        assert_eq!(
            super::parse_rfc3339("2026-11-22T16:03:07+01:00"),
            Some(1_795_359_787_000_000_000)
        );
        assert_eq!(
            super::parse_rfc3339("2026-11-22T15:03:07.5Z"),
            Some(1_795_359_787_500_000_000)
        );
        assert_eq!(
            super::parse_rfc3339("2024-02-29T00:00:00-00:30"),
            Some(1_709_166_600_000_000_000)
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-13-01T00:00:00Z",
            "2026-11-22T15:03:07",
            "2026-11-22T15:03:07.Z",
            "yesterday",
            // Days a month does not have, and impossible offsets.
            "2026-02-31T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-04-31T12:00:00Z",
            "2026-11-22T15:03:07+99:99",
            "2026-11-22T15:03:07+24:00",
            "2026-11-22T15:03:07+-1:00",
            "2026-11-22T15:03:07+01:60",
            "2026-11-22T25:03:07Z",
        ] {
            assert_eq!(super::parse_rfc3339(bad), None, "{bad}");
        }
    }
}
