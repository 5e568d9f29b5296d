//! Human-written sizes and durations (`512MiB`, `30s`), as flags and
//! environment variables give them.

use std::time::Duration;

/// `512MiB`, `1G`, `1048576`: binary units, case-insensitive, `B` optional.
pub fn size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().map_err(|_| {
        format!("`{s}` is not a size; use a number with an optional unit such as 512MiB or 2GiB")
    })?;
    let shift = match unit.trim().to_ascii_lowercase().trim_end_matches('b') {
        "" => 0,
        "k" | "ki" => 10,
        "m" | "mi" => 20,
        "g" | "gi" => 30,
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit; use K, M or G (binary: MiB = 1048576 bytes)"
            ));
        }
    };
    n.checked_mul(1usize << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// `30s`, `500ms`, `2m`, `1h`, a bare number of seconds, or `none`
/// (returned as zero: no deadline).
pub fn duration(s: &str) -> Result<Duration, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "none" || t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; use for example 30s, 500ms, 5m or none"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}` has an unknown unit; use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{s}` is not a valid duration; use none for no deadline"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("512MiB").unwrap(), 512 << 20);
        assert_eq!(size("2g").unwrap(), 2 << 30);
        assert_eq!(size("4096").unwrap(), 4096);
        assert!(size("12 parsecs").unwrap_err().contains("unknown unit"));
        assert!(size("lots").unwrap_err().contains("not a size"));
    }

    #[test]
    fn durations() {
        assert_eq!(duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(duration("none").unwrap(), Duration::ZERO);
        assert!(duration("soon").is_err());
        assert!(duration("5 fortnights").is_err());
    }
}
