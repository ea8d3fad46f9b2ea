//! Durations as Kubernetes writes them (`metav1.Duration`: Go's `time.ParseDuration` syntax,
//! e.g. `90s`, `1m30s`, `1.5s`, `300ms`), the form of `BGPPeer.spec.holdTime` and its siblings.
//!
//! Written here rather than taken from a crate: the apiserver's CEL `duration()` accepts exactly
//! Go's syntax, and the speaker must read every value the apiserver let through the same way.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration like 90s, 1m30s or 300ms: {why}")]
pub struct DurationError {
    /// The text as written.
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Parses `text` in Go's duration syntax. Negative durations are refused (no field takes one).
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let fail = |why| DurationError {
        text: text.to_string(),
        why,
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(fail("it is empty"));
    }
    if text.starts_with('-') {
        return Err(fail("it is negative"));
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| fail("a number has no unit (ns, us, ms, s, m or h)"))?;
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(fail("a number has no unit (ns, us, ms, s, m or h)")),
            _ => return Err(fail("the unit must be one of ns, us, ms, s, m, h")),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return Err(fail("a number is malformed"));
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| fail("a number is too large"))?
        };
        let mut part = whole
            .checked_mul(unit_nanos)
            .ok_or_else(|| fail("it is too long"))?;
        // The fraction's digits, each a tenth of the one before; digits beyond a nanosecond drop.
        let mut scale = unit_nanos;
        for digit in fraction.bytes() {
            scale /= 10;
            part += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos
            .checked_add(part)
            .ok_or_else(|| fail("it is too long"))?;
        rest = after;
    }
    // Go's limit: about 292 years in nanoseconds.
    if total_nanos > i64::MAX as u128 {
        return Err(fail("it is too long"));
    }
    Ok(Duration::from_nanos(total_nanos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_forms_parse() {
        for (text, want) in [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("90s", Duration::from_secs(90)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("300ms", Duration::from_millis(300)),
            ("1h", Duration::from_secs(3600)),
            ("2h45m", Duration::from_secs(2 * 3600 + 45 * 60)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("+3s", Duration::from_secs(3)),
            ("1.0000000009s", Duration::from_secs(1)),
        ] {
            assert_eq!(parse_go_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_forms_say_why() {
        for (text, why) in [
            ("", "it is empty"),
            ("-1s", "it is negative"),
            ("90", "a number has no unit (ns, us, ms, s, m or h)"),
            ("1m30", "a number has no unit (ns, us, ms, s, m or h)"),
            ("5d", "the unit must be one of ns, us, ms, s, m, h"),
            ("s", "a number is malformed"),
            ("1.2.3s", "a number is malformed"),
            (".s", "a number is malformed"),
            ("9999999999999h", "it is too long"),
        ] {
            let err = parse_go_duration(text).unwrap_err();
            assert_eq!(err.why, why, "{text}");
            assert!(err.to_string().contains(&format!("{text:?}")));
        }
    }
}
