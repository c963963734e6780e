//! Durations as Kubernetes and Istio accept them: Go's `time.ParseDuration`
//! syntax (`300ms`, `1.5s`, `1h30m`).

/// Parse a Go-style duration into nanoseconds. `None` when the text is not a
/// duration or overflows.
pub fn parse_nanos(text: &str) -> Option<i128> {
    let (neg, mut s) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if s == "0" {
        return Some(0);
    }
    if s.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !s.is_empty() {
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let num = &s[..num_end];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        s = &s[num_end..];
        let unit_end = s
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(s.len());
        let unit: i128 = match &s[..unit_end] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        s = &s[unit_end..];
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let whole: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        let mut v = whole.checked_mul(unit)?;
        let mut scale = unit;
        for d in frac_part.bytes().take(30) {
            scale /= 10;
            v = v.checked_add(i128::from(d - b'0') * scale)?;
        }
        total = total.checked_add(v)?;
        if total > i128::from(i64::MAX) {
            return None;
        }
    }
    Some(if neg { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::parse_nanos;

    #[test]
    fn go_durations() {
        assert_eq!(parse_nanos("300s"), Some(300_000_000_000));
        assert_eq!(parse_nanos("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_nanos("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_nanos("100ms"), Some(100_000_000));
        assert_eq!(parse_nanos("0"), Some(0));
        assert_eq!(parse_nanos("-2ms"), Some(-2_000_000));
        assert_eq!(parse_nanos("10"), None);
        assert_eq!(parse_nanos("1x"), None);
        assert_eq!(parse_nanos(""), None);
        assert_eq!(parse_nanos("999999999999999h"), None);
    }
}
