//! Kubernetes quantities (`256Mi`, `2G`, `500m`) as numbers.

/// Bytes of a memory quantity; `None` when it does not parse.
pub fn bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, unit) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mul: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "m" => 1e-3,
        _ => return None,
    };
    let v = n * mul;
    (v.is_finite() && v >= 0.0).then_some(v.ceil() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantities() {
        assert_eq!(super::bytes("256Mi"), Some(256 << 20));
        assert_eq!(super::bytes("2G"), Some(2_000_000_000));
        assert_eq!(super::bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(super::bytes("1024"), Some(1024));
        assert_eq!(super::bytes("12 parsecs"), None);
        assert_eq!(super::bytes("abc"), None);
    }
}
