//! Escaping of strings that came from the network before they reach a
//! terminal.
//!
//! A device id, a firmware version, a header value, a close reason: any of
//! them can carry ESC sequences that set the terminal's title, clear the
//! screen or print fake lines, C1 controls (U+0080..U+009F, which some
//! terminals obey like ESC), or bidirectional overrides that make text read
//! differently from what it is. Text and summary output pass every such
//! string through [`Esc`], which spells those characters out the way Rust's
//! `{:?}` does (`\u{1b}`, `\n`, `\u{202e}`) and leaves everything else,
//! quotes and backslashes included, as it is. JSON output needs none of this:
//! its encoder already escapes control characters, and it must stay exact.

use std::fmt;

/// Printable ASCII only: nothing in it needs escaping, for a terminal or
/// for `{:?}` (but `"` and `\\`).
pub fn is_plain(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// A string made safe for a terminal; see the module docs.
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        // Fast path: plain printable ASCII needs nothing.
        if is_plain(s) {
            return f.write_str(s);
        }
        for c in s.chars() {
            let e = c.escape_debug();
            if e.len() == 1 || matches!(c, '"' | '\'' | '\\') {
                fmt::Write::write_char(f, c)?;
            } else {
                fmt::Display::fmt(&e, f)?;
            }
        }
        Ok(())
    }
}

/// [`Esc`] into an owned string.
pub fn esc(s: &str) -> String {
    Esc(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_c1_and_bidi_are_spelled_out() {
        assert_eq!(esc("KN-\u{1b}]0;pwned\u{7}"), "KN-\\u{1b}]0;pwned\\u{7}");
        assert_eq!(esc("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(esc("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(esc("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(
            esc("\u{2066}x\u{2069}\u{200f}"),
            "\\u{2066}x\\u{2069}\\u{200f}"
        );
        assert_eq!(esc("\u{7f}"), "\\u{7f}");
    }

    #[test]
    fn ordinary_text_is_untouched() {
        for s in [
            "KN-A4CF12F0E1B2",
            "say \"hi\" it's C:\\x",
            "23.5 °C, Grüße, 電力",
            "",
        ] {
            assert_eq!(esc(s), s);
        }
    }
}
