//! JSON's `\uXXXX` escapes, shared by the text and JSON filter parsers.

use crate::error::ParseError;

/// Reads four hex digits at `*i` and advances past them.
pub(crate) fn hex4(s: &str, i: &mut usize) -> Result<u32, ParseError> {
    let h = s
        .get(*i..*i + 4)
        .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
        .and_then(|h| u32::from_str_radix(h, 16).ok());
    match h {
        Some(v) => {
            *i += 4;
            Ok(v)
        }
        None => Err(ParseError::new(*i, "4 hex digits")),
    }
}

/// Reads the code point of a `\u` escape whose `u` has just been consumed (`*i` is at the
/// digits), joining a UTF-16 surrogate pair. `esc` is the backslash's position, for errors.
pub(crate) fn unicode(s: &str, i: &mut usize, esc: usize) -> Result<char, ParseError> {
    let hi = hex4(s, i)?;
    let cp = if (0xD800..0xDC00).contains(&hi) {
        if s.as_bytes().get(*i..*i + 2) != Some(b"\\u") {
            return Err(ParseError::new(*i, "low surrogate '\\uDC00'..'\\uDFFF'"));
        }
        *i += 2;
        let lo = hex4(s, i)?;
        if !(0xDC00..0xE000).contains(&lo) {
            return Err(ParseError::new(
                *i - 4,
                "low surrogate '\\uDC00'..'\\uDFFF'",
            ));
        }
        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
    } else {
        hi
    };
    char::from_u32(cp).ok_or_else(|| ParseError::new(esc, "valid unicode escape"))
}

/// `s` as a double-quoted string literal that both filter parsers (and JSON, and JSONPath)
/// read back as `s`: quotes and backslashes escaped, every control character (DEL and C1 included, which
/// JSON would let through raw but the text parser refuses) as `\uXXXX`.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_what_the_parsers_refuse_raw() {
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(
            quote("\n\t\u{0}\u{7f}\u{9f}é"),
            r#""\n\t\u0000\u007f\u009fé""#
        );
    }

    #[test]
    fn surrogate_pairs_join_and_bad_escapes_are_positioned() {
        let s = "d83c\\udf4a!";
        let mut i = 0;
        assert_eq!(unicode(s, &mut i, 0).unwrap(), '🍊');
        assert_eq!(&s[i..], "!");
        let mut i = 0;
        let e = unicode("d800x", &mut i, 0).unwrap_err();
        assert_eq!(e.pos, 4);
        assert!(e.to_string().contains("low surrogate"));
        let mut i = 0;
        assert_eq!(unicode("00e9", &mut i, 0).unwrap(), 'é');
        let mut i = 0;
        assert!(
            hex4("12g4", &mut i)
                .unwrap_err()
                .to_string()
                .contains("4 hex digits")
        );
    }
}
