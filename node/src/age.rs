//! Ages (`90s`, `15m`, `12h`, `7d`) and replay starting points (`since`), read the same way by
//! the CLI and the API.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds in an age like `90s`, `15m`, `12h`, `7d`.
pub fn age_secs(s: &str) -> Result<u64, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: want a number and a unit, like 90s, 15m, 12h or 7d"))?;
    let per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    Ok(n.saturating_mul(per))
}

/// A replay start: milliseconds since the Unix epoch (`0` = from the start), or an age before
/// `now_ms` (`15m`, `2h`).
pub fn since_ms(s: &str, now_ms: u64) -> Result<u64, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let secs = age_secs(s).map_err(|_| {
        format!(
            "{s:?}: want milliseconds since the Unix epoch (0 = from the start) or an age like 90s, 15m, 2h, 7d"
        )
    })?;
    Ok(now_ms.saturating_sub(secs.saturating_mul(1000)))
}

/// Milliseconds since the Unix epoch by this machine's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_milliseconds_and_ages() {
        let now = 1_764_640_000_000;
        assert_eq!(since_ms("0", now), Ok(0));
        assert_eq!(since_ms("1764600000000", now), Ok(1_764_600_000_000));
        assert_eq!(since_ms("15m", now), Ok(now - 900_000));
        assert_eq!(since_ms("2h", now), Ok(now - 7_200_000));
        assert_eq!(since_ms("90s", now), Ok(now - 90_000));
        assert_eq!(since_ms("100000d", 5), Ok(0));
        for bad in ["", "15x", "m", "-5", "1.5h", "soon"] {
            let e = since_ms(bad, now).expect_err(bad);
            assert!(e.contains("15m"), "{bad}: {e}");
        }
    }
}
