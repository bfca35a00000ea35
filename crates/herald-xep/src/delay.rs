//! XEP-0082 date-time stamps and XEP-0203 `<delay/>` elements.
//!
//! Times are unix microseconds (the store's unit) everywhere in Herald; this module converts
//! them to and from the XEP-0082 `DateTime` profile. It must not read the clock except in
//! [`now_micros`], which callers use at the edge and pass down.

use herald_proto::{ns, Element};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::stanza;

/// Earliest instant a four-digit XEP-0082 year can express: 0000-01-01T00:00:00Z.
const MIN_MICROS: i64 = -62_167_219_200_000_000;
/// Latest instant a four-digit XEP-0082 year can express: 9999-12-31T23:59:59.999999Z.
const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// Formats unix microseconds as an XEP-0082 `DateTime` in UTC with microseconds, e.g.
/// `2026-11-25T12:00:00.123456Z`. Instants outside years 0000–9999 are clamped (XEP-0082
/// §3: the year has exactly four digits).
pub fn format_stamp(unix_micros: i64) -> String {
    let micros = unix_micros.clamp(MIN_MICROS, MAX_MICROS);
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000) else {
        // Unreachable after clamping; the epoch is a harmless answer.
        return "1970-01-01T00:00:00.000000Z".to_owned();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Parses an XEP-0082 `DateTime` (`CCYY-MM-DDThh:mm:ss[.sss]TZD`, TZD `Z` or `±hh:mm`) into
/// unix microseconds. Fraction digits beyond microseconds are truncated. `None` for anything
/// else, including out-of-range fields and leap seconds.
pub fn parse_stamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    // CCYY-MM-DDThh:mm:ss is 19 bytes, then at least "Z".
    if b.len() < 20 || !s.is_ascii() {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' {
        return None;
    }
    if b[16] != b':' {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0u32;
    if let Some((&b'.', frac)) = rest.split_first() {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        for (i, c) in frac[..n].iter().enumerate() {
            if i < 6 {
                micros = micros * 10 + u32::from(c - b'0');
            }
        }
        for _ in n..6 {
            micros *= 10;
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => UtcOffset::UTC,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let oh = digits(&[*h1, *h2])?;
            let om = digits(&[*m1, *m2])?;
            if oh > 23 || om > 59 {
                return None;
            }
            let (oh, om) = (i8::try_from(oh).ok()?, i8::try_from(om).ok()?);
            if *sign == b'-' {
                UtcOffset::from_hms(-oh, -om, 0).ok()?
            } else {
                UtcOffset::from_hms(oh, om, 0).ok()?
            }
        }
        _ => return None,
    };
    let date = Date::from_calendar_date(
        i32::try_from(year).ok()?,
        Month::try_from(u8::try_from(month).ok()?).ok()?,
        u8::try_from(day).ok()?,
    )
    .ok()?;
    let time = Time::from_hms_micro(
        u8::try_from(hour).ok()?,
        u8::try_from(minute).ok()?,
        u8::try_from(second).ok()?,
        micros,
    )
    .ok()?;
    let nanos = PrimitiveDateTime::new(date, time)
        .assume_offset(offset)
        .unix_timestamp_nanos();
    i64::try_from(nanos.div_euclid(1000)).ok()
}

/// A run of ASCII digits as a number; `None` if any byte is not a digit.
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// `<delay xmlns='urn:xmpp:delay' from=.. stamp=../>`; an empty `from` is left out (MAM
/// results carry only the stamp).
pub fn delay(from: &str, unix_micros: i64) -> Element {
    let stamp = format_stamp(unix_micros);
    let mut el = stanza::new("delay", ns::DELAY, &[]);
    if !from.is_empty() {
        stanza::set(&mut el, "from", from);
    }
    stanza::set(&mut el, "stamp", stamp);
    el
}

/// Appends a `<delay/>` to `stanza` unless one with the same `from` is already there
/// (XEP-0203 §3: each entity that delays a stanza adds its own, so a stanza delayed twice by
/// us, e.g. offline and then in a resumed SM queue, keeps the first, original stamp).
pub fn add_delay(stanza: &mut Element, from: &str, unix_micros: i64) {
    let already = stanza
        .children()
        .any(|c| c.is("delay", ns::DELAY) && c.attr("from").unwrap_or("") == from);
    if !already {
        stanza.append_child(delay(from, unix_micros));
    }
}

/// The wall clock as unix microseconds.
pub fn now_micros() -> i64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos.div_euclid(1000)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_795_608_000_123_456; // 2026-11-25T12:00:00.123456Z

    #[test]
    fn format_known_instants() {
        assert_eq!(format_stamp(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_stamp(T), "2026-11-25T12:00:00.123456Z");
        assert_eq!(format_stamp(-1), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn format_clamps_to_four_digit_years() {
        assert_eq!(format_stamp(i64::MAX), "9999-12-31T23:59:59.999999Z");
        assert_eq!(format_stamp(i64::MIN), "0000-01-01T00:00:00.000000Z");
    }

    #[test]
    fn round_trip() {
        for t in [0, 1, -1, T, MIN_MICROS, MAX_MICROS, 951_782_400_000_000] {
            assert_eq!(parse_stamp(&format_stamp(t)), Some(t), "{t}");
        }
    }

    #[test]
    fn parse_xep_0082_examples() {
        // XEP-0082 §3.2 examples.
        let a = parse_stamp("1969-07-21T02:56:15Z").unwrap();
        assert_eq!(a, -14_159_025_000_000);
        assert_eq!(parse_stamp("1969-07-20T21:56:15-05:00"), Some(a));
        assert_eq!(parse_stamp("1969-07-21T04:56:15+02:00"), Some(a));
        assert_eq!(parse_stamp("1969-07-21T02:56:15.5Z"), Some(a + 500_000));
        assert_eq!(
            parse_stamp("2002-09-10T23:08:25.123456789Z"),
            Some(1_031_699_305_123_456)
        );
        assert_eq!(
            parse_stamp("2002-09-10t23:08:25z"),
            Some(1_031_699_305_000_000)
        );
    }

    #[test]
    fn parse_rejects_garbage() {
        for s in [
            "",
            "2002-09-10",
            "2002-09-10T23:08:25",
            "2002-09-10 23:08:25Z",
            "2002-13-10T23:08:25Z",
            "2002-02-30T23:08:25Z",
            "2002-09-10T24:00:00Z",
            "2002-09-10T23:08:60Z",
            "2002-09-10T23:08:25.Z",
            "2002-09-10T23:08:25+24:00",
            "2002-09-10T23:08:25+05",
            "2002-09-10T23:08:25+05:00:00",
            "2002-09-10T23:08:25ZZ",
            "20020910T23:08:25Z",
            "-002-09-10T23:08:25Z",
            "2002-09-10T23:08:2é5Z",
            "２００２-09-10T23:08:25Z",
        ] {
            assert_eq!(parse_stamp(s), None, "{s:?}");
        }
    }

    #[test]
    fn delay_element() {
        let d = delay("capulet.lit", T);
        assert!(d.is("delay", ns::DELAY));
        assert_eq!(d.attr("from"), Some("capulet.lit"));
        assert_eq!(d.attr("stamp"), Some("2026-11-25T12:00:00.123456Z"));
        assert_eq!(delay("", T).attr("from"), None);
    }

    #[test]
    fn add_delay_once_per_from() {
        let mut m: Element = "<message xmlns='jabber:client'><body>hi</body>\
             <delay xmlns='urn:xmpp:delay' from='other.lit' stamp='2002-09-10T23:08:25Z'/>\
             </message>"
            .parse()
            .unwrap();
        add_delay(&mut m, "capulet.lit", T);
        add_delay(&mut m, "capulet.lit", T + 5);
        let delays: Vec<&Element> = m.children().filter(|c| c.is("delay", ns::DELAY)).collect();
        assert_eq!(delays.len(), 2);
        assert_eq!(delays[1].attr("from"), Some("capulet.lit"));
        assert_eq!(delays[1].attr("stamp"), Some("2026-11-25T12:00:00.123456Z"));
    }

    #[test]
    fn now_is_after_2024() {
        assert!(now_micros() > parse_stamp("2024-01-01T00:00:00Z").unwrap());
    }
}
