//! The nesting depth of raw JSON, measured without building a tree.
//!
//! A notification's `data` is routed as raw JSON (never parsed into a tree), so its depth
//! costs the relay nothing; but every subscriber parses it, and most JSON parsers refuse
//! (or overflow their stack on) deep nesting: serde_json stops at 128 levels, browsers
//! and Python at about 1,000. [`DATA_DEPTH_MAX`] bounds what the relay will forward.

/// Deepest nesting of arrays and objects accepted in a notification's `data` (and a
/// ping's `id`): `{}` and `[]` are depth 1, a scalar depth 0. Half of serde_json's own
/// recursion limit, so that a subscriber using serde_json parses the whole notification
/// (`data` sits one level inside it) with room to spare.
pub const DATA_DEPTH_MAX: usize = 64;

/// True when `raw` (well-formed JSON, as serde_json's `RawValue` guarantees) never nests
/// arrays and objects deeper than `max`. One linear pass over the bytes: brackets inside
/// strings do not count, and a backslash escapes the next byte of a string. Strings are
/// skipped with `memchr` (a 1 MiB string costs a vectorized search, not a million
/// branches). Stops at the first level over `max`.
pub fn within_depth(raw: &[u8], max: usize) -> bool {
    if !matches!(raw.trim_ascii_start().first(), Some(b'[' | b'{')) {
        // A scalar (a string of a megabyte, say) nests nothing: no pass over it.
        return true;
    }
    let mut depth = 0usize;
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'"' => match string_end(raw, i + 1) {
                Some(end) => {
                    i = end;
                    continue;
                }
                None => return true,
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    true
}

/// The index just past the closing quote of the string whose contents start at `from`,
/// or `None` when it never closes.
fn string_end(raw: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let offset = memchr::memchr2(b'"', b'\\', raw.get(from..)?)?;
        let at = from + offset;
        if raw[at] == b'\\' {
            from = at + 2;
        } else {
            return Some(at + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }

    fn objects(levels: usize) -> String {
        format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels))
    }

    #[test]
    fn scalars_are_depth_zero() {
        for raw in ["1", "\"x\"", "null", "true", "-2.5e3"] {
            assert!(within_depth(raw.as_bytes(), 0), "{raw}");
        }
        assert!(!within_depth(b"[]", 0));
        assert!(!within_depth(b"{}", 0));
    }

    #[test]
    fn exactly_at_the_limit_is_accepted_one_over_is_refused() {
        for (raw, levels) in [
            (nested(DATA_DEPTH_MAX), DATA_DEPTH_MAX),
            (objects(DATA_DEPTH_MAX), DATA_DEPTH_MAX),
        ] {
            assert!(within_depth(raw.as_bytes(), levels));
            assert!(!within_depth(raw.as_bytes(), levels - 1));
        }
        assert!(!within_depth(
            nested(DATA_DEPTH_MAX + 1).as_bytes(),
            DATA_DEPTH_MAX
        ));
        assert!(!within_depth(
            objects(DATA_DEPTH_MAX + 1).as_bytes(),
            DATA_DEPTH_MAX
        ));
    }

    #[test]
    fn depth_is_the_deepest_branch_not_the_count_of_brackets() {
        // 100 siblings at depth 2: depth 2.
        let siblings = format!("[{}[]]", "[],".repeat(100));
        assert!(within_depth(siblings.as_bytes(), 2));
        assert!(!within_depth(siblings.as_bytes(), 1));
        let mixed = r#"{"a":[1,{"b":[]}],"c":{"d":{}}}"#;
        assert!(within_depth(mixed.as_bytes(), 4));
        assert!(!within_depth(mixed.as_bytes(), 3));
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let raw = r#"{"k":"[[[[{{{{","[{":"}}]]"}"#;
        assert!(within_depth(raw.as_bytes(), 1));
        let deep_in_a_string = format!("[\"{}\"]", "[".repeat(10_000));
        assert!(within_depth(deep_in_a_string.as_bytes(), 1));
    }

    #[test]
    fn escapes_are_respected() {
        // An escaped quote does not end the string: the brackets after it are text.
        let raw = r#"["a\"[[[[", "b"]"#;
        assert!(within_depth(raw.as_bytes(), 1));
        // An escaped backslash does end the escape: the quote after it closes the string,
        // so the brackets that follow are structure.
        let raw = r#"["a\\", [[1]]]"#;
        assert!(within_depth(raw.as_bytes(), 3));
        assert!(!within_depth(raw.as_bytes(), 2));
        // A \u escape is plain text.
        let raw = r#"{"k":"\u005b\u007b"}"#;
        assert!(within_depth(raw.as_bytes(), 1));
    }

    #[test]
    fn a_very_deep_value_is_refused_in_one_pass() {
        let raw = nested(500_000);
        assert!(!within_depth(raw.as_bytes(), DATA_DEPTH_MAX));
        assert!(within_depth(raw.as_bytes(), 500_000));
    }
}
