//! Field rules shared by every resource: e-mail addresses, time zones, URLs, colours. One rule each, so
//! that an address an organizer may enter is one a buyer may enter too.

/// A colour as stored: `#rrggbb` in lower case (`#RGB` and upper case are taken too);
/// `None` when it is not a colour.
pub fn normal_color(color: &str) -> Option<String> {
    let hex = color.trim().strip_prefix('#')?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let full: String = match hex.len() {
        6 => hex.to_owned(),
        3 => hex.chars().flat_map(|c| [c, c]).collect(),
        _ => return None,
    };
    Some(format!("#{}", full.to_ascii_lowercase()))
}

/// For a changeable field that may be cleared, with `#[serde(default)]`: absent is `None` (no
/// change), `null` is `Some(None)` (cleared), a value is `Some(Some(value))`.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// An IANA zone name's shape (`UTC`, `Europe/Berlin`, `America/Argentina/Buenos_Aires`).
pub fn valid_time_zone(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.split('/').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+'))
        })
}

/// An e-mail address's shape (the edge checks it too before it extends a checkout's hold).
pub use shared_types::email::valid_email;

/// An image or page address: http(s), at most 2,000 characters, no white space.
pub fn is_url(s: &str) -> bool {
    (s.starts_with("https://") || s.starts_with("http://"))
        && s.len() <= 2000
        && !s.contains(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_email_rule() {
        assert!(valid_email("a@b.co"));
        assert!(valid_email("first.last+tag@example.org"));
        for bad in ["", "a@b", "@b.co", "a b@c.de", "a@b@c.de", "a@\u{7}b.de", "x"] {
            assert!(!valid_email(bad), "{bad}");
        }
        assert!(!valid_email(&format!("{}@b.co", "a".repeat(250))));
    }

    #[test]
    fn time_zones_and_urls() {
        assert!(valid_time_zone("America/Argentina/Buenos_Aires"));
        assert!(!valid_time_zone("Europe//Berlin"));
        assert!(is_url("https://example.org/a.png"));
        assert!(!is_url("javascript:alert(1)"));
        assert!(!is_url("https://a b"));
    }

    #[test]
    fn colours_are_stored_as_six_lower_case_hex_digits() {
        assert_eq!(normal_color("#1A2b3C").as_deref(), Some("#1a2b3c"));
        assert_eq!(normal_color(" #abc ").as_deref(), Some("#aabbcc"));
        for bad in ["", "#", "123456", "#12345", "#1234567", "#ggg000", "red", "#12;x<y"] {
            assert_eq!(normal_color(bad), None, "{bad}");
        }
    }
}
