//! Secrets: compared in constant time, and shown as one word wherever configuration or
//! requests are printed.

/// What `Debug`, `GET /config` and `check-config` show in place of a secret.
pub const REDACTED: &str = "***";

/// A set secret as `REDACTED`; an absent one stays absent.
pub fn redact(secret: Option<&str>) -> Option<&'static str> {
    secret.map(|_| REDACTED)
}

/// Compares a presented secret with the expected one without revealing, through timing,
/// where they first differ.
pub fn matches(expected: &[u8], presented: &[u8]) -> bool {
    let mut diff = expected.len() ^ presented.len();
    for i in 0..expected.len().max(presented.len()) {
        let x = expected.get(i).copied().unwrap_or(0);
        let y = presented.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn compares_contents_and_length() {
        assert!(super::matches(b"abc", b"abc"));
        assert!(!super::matches(b"abc", b"abd"));
        assert!(!super::matches(b"abc", b"abc\0"));
        assert!(super::matches(b"", b""));
    }
}
