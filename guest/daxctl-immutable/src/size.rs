//! Sizes with K, M and G suffixes, and fill patterns.

/// Parses `4096`, `64K`, `1M`, `2G` (binary multiples; `KiB`-style and
/// lower-case suffixes too). Zero is refused: nothing can be sealed in it.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, suffix) = t.split_at(digits);
    if number.is_empty() {
        return Err(format!("{text:?} is not a size: give a whole number with an optional K, M or G suffix"));
    }
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("{text:?}: unknown suffix {suffix:?} (use K, M, G or T)")),
    };
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is too large"))?;
    let bytes = n.checked_mul(1u64 << shift).ok_or_else(|| format!("{text:?} is too large"))?;
    if bytes == 0 {
        return Err("the size must be more than 0".into());
    }
    Ok(bytes)
}

/// What `create --fill` writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fill {
    Zero,
    /// These bytes, repeated over the whole file.
    Pattern(Vec<u8>),
}

/// `zero`, or hexadecimal bytes such as `0x5a` or `0xdeadbeef` (1 to 64
/// bytes), repeated over the file.
pub fn parse_fill(text: &str) -> Result<Fill, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("zero") {
        return Ok(Fill::Zero);
    }
    let hex = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).ok_or_else(|| {
        format!("{text:?} is not a fill: give `zero` or hexadecimal bytes such as 0x5a or 0xdeadbeef")
    })?;
    if hex.is_empty() || hex.len() % 2 != 0 || hex.len() > 128 {
        return Err(format!("{text:?}: give 1 to 64 whole bytes, two hex digits each"));
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| format!("{text:?}: {hex:?} is not hexadecimal"))?;
    Ok(Fill::Pattern(bytes))
}

/// `n` bytes as a short human figure: 512 B, 64 KiB, 1.5 MiB.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    let mut value = n as f64;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size(" 3G "), Ok(3 << 30));
    }

    #[test]
    fn bad_sizes_say_what_to_give() {
        for bad in ["", "M", "-1", "1.5M", "1X", "0", "0K", "99999999999999999999", "17179869184G"] {
            let e = parse_size(bad).expect_err(bad);
            assert!(!e.is_empty(), "{bad}");
        }
        assert!(parse_size("1X").unwrap_err().contains("unknown suffix"));
        assert!(parse_size("abc").unwrap_err().contains("K, M or G"));
    }

    #[test]
    fn fills_are_zero_or_hex_bytes() {
        assert_eq!(parse_fill("zero"), Ok(Fill::Zero));
        assert_eq!(parse_fill("0x5a"), Ok(Fill::Pattern(vec![0x5a])));
        assert_eq!(parse_fill("0xDEADbeef"), Ok(Fill::Pattern(vec![0xde, 0xad, 0xbe, 0xef])));
        for bad in ["", "0x", "0x5", "5a", "0xzz", "ones"] {
            assert!(parse_fill(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(65536), "64 KiB");
        assert_eq!(human(1536 * 1024), "1.5 MiB");
        assert_eq!(human(1 << 30), "1 GiB");
    }
}

/// Property tests (`cargo xtask fuzz` raises the case count).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: dax_seal_protocol::fuzz_cases(), failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_text_is_a_size_a_fill_or_a_reason(text in any::<String>()) {
            if let Err(e) = parse_size(&text) {
                prop_assert!(!e.is_empty());
            }
            if let Err(e) = parse_fill(&text) {
                prop_assert!(!e.is_empty());
            }
        }

        #[test]
        fn sizes_and_fills_read_back(n in 1u64.., unit in prop::sample::select(vec![("", 0u32), ("K", 10), ("MiB", 20), ("g", 30)]),
                                     bytes in prop::collection::vec(any::<u8>(), 1..=64)) {
            let text = format!("{n}{}", unit.0);
            match n.checked_mul(1u64 << unit.1) {
                Some(v) => prop_assert_eq!(parse_size(&text), Ok(v)),
                None => prop_assert!(parse_size(&text).unwrap_err().contains("too large")),
            }
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            prop_assert_eq!(parse_fill(&format!("0x{hex}")), Ok(Fill::Pattern(bytes)));
        }
    }
}
