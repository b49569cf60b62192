//! Field primitives: identifiers, whole numbers, timestamps and the compact varint, the rules every
//! cell of every file is held to, kept apart so they can be read and tested on their own.

use chrono::DateTime;

/// Appends `v` zigzag-encoded as a LEB128 varint: stock quantities are small, so a record is
/// mostly one or two bytes per value instead of eight, which halves the bytes partitioned,
/// spilled and joined.
#[inline]
pub(super) fn put_varint(b: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        b.push((z as u8) | 0x80);
        z >>= 7;
    }
    b.push(z as u8);
}

/// Why an identifier field is refused, in the words of the id rules.
pub(super) fn check_ident(b: &[u8], max: usize) -> Result<&[u8], String> {
    if b.is_empty() {
        return Err("must not be empty".into());
    }
    if b.len() > max {
        return Err(format!("must be at most {max} bytes (got {})", b.len()));
    }
    // Fast path, no UTF-8 decoding: printable ASCII without surrounding spaces is by far the
    // common case (and is valid UTF-8 by construction).
    if b.iter().all(|c| (0x20..0x7f).contains(c)) && b[0] != b' ' && b[b.len() - 1] != b' ' {
        return Ok(b);
    }
    let s = std::str::from_utf8(b).map_err(|_| "is not valid UTF-8".to_owned())?;
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if s.trim() != s {
        return Err("must not have leading or trailing white space".into());
    }
    Ok(b)
}

/// A whole number: optional sign, digits, optionally `.0...` (ERP exports write `12.000`), with
/// surrounding spaces allowed. Anything else (`1,200`, `12.5`, `1e3`) is refused rather than guessed.
pub(super) fn parse_int(b: &[u8]) -> Result<i64, String> {
    let mut s = b;
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    if s.is_empty() {
        return Err("is empty; expected a whole number".into());
    }
    let (neg, digits) = match s[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = match digits.iter().position(|c| *c == b'.') {
        Some(i) => (&digits[..i], &digits[i + 1..]),
        None => (digits, &digits[digits.len()..]),
    };
    let shown = || String::from_utf8_lossy(b).into_owned();
    if int.is_empty() || int.len() > 13 || !int.iter().all(u8::is_ascii_digit) {
        if int.len() > 13 && int.iter().all(u8::is_ascii_digit) {
            return Err(format!(
                "`{}` is out of range (at most {} in absolute value)",
                shown(),
                driftless_core::MAX_QUANTITY
            ));
        }
        return Err(format!("`{}` is not a whole number", shown()));
    }
    if !frac.iter().all(|c| *c == b'0') {
        return Err(format!("`{}` is not a whole number", shown()));
    }
    let mut v: i64 = 0;
    for c in int {
        v = v * 10 + i64::from(c - b'0');
    }
    if v > driftless_core::MAX_QUANTITY {
        return Err(format!(
            "`{}` is out of range (at most {} in absolute value)",
            shown(),
            driftless_core::MAX_QUANTITY
        ));
    }
    Ok(if neg { -v } else { v })
}

/// Milliseconds since the epoch of an RFC 3339 timestamp.
pub(super) fn parse_time(b: &[u8]) -> Result<i64, String> {
    let s = std::str::from_utf8(b).map_err(|_| "is not valid UTF-8".to_owned())?;
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("`{s}` is not an RFC 3339 timestamp ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers() {
        assert_eq!(parse_int(b"12"), Ok(12));
        assert_eq!(parse_int(b" -3 "), Ok(-3));
        assert_eq!(parse_int(b"+7"), Ok(7));
        assert_eq!(parse_int(b"12.000"), Ok(12));
        assert!(parse_int(b"12.5").is_err());
        assert!(parse_int(b"1,200").is_err());
        assert!(parse_int(b"1e3").is_err());
        assert!(parse_int(b"").is_err());
        assert!(parse_int(b"-").is_err());
        assert!(parse_int(b"99999999999999999999999").is_err());
        assert!(parse_int(b"1000000000001").is_err());
        assert_eq!(parse_int(b"1000000000000"), Ok(1_000_000_000_000));
    }

    #[test]
    fn identifiers() {
        assert!(check_ident(b"TEE-1", 128).is_ok());
        assert!(check_ident(b"TEE 1", 128).is_ok());
        assert!(check_ident(b" TEE", 128).is_err());
        assert!(check_ident(b"T\tE", 128).is_err());
        assert!(check_ident(b"\xff", 128).is_err());
        assert!(check_ident("ñandú".as_bytes(), 128).is_ok());
        assert!(check_ident(&[b'x'; 129], 128).is_err());
    }
}
