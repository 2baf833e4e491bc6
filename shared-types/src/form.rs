//! `application/x-www-form-urlencoded` bodies: what the edge's pages post (a waiting-list join, the
//! bot check's answer) and what the edge posts to Turnstile. Read and written by the
//! `form_urlencoded` crate (the `url` crate's own); here rather than in the edge so that the fuzz
//! target `readers` reaches the reader the edge uses (docs/fuzzing.md).

use std::collections::HashMap;

/// The fields of a form body (the last of a repeated name wins). Bytes that are not UTF-8 after
/// decoding become U+FFFD, as the WHATWG URL standard's parser does.
pub fn form_fields(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// A form body of `fields`, in order.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_round_trip_through_the_encoder() {
        let body = form_body(&[("secret", "a b&c=d"), ("response", "é%+")]);
        let fields = form_fields(body.as_bytes());
        assert_eq!(fields["secret"], "a b&c=d");
        assert_eq!(fields["response"], "é%+");
    }

    #[test]
    fn the_last_of_a_repeated_name_wins_and_bad_bytes_are_replaced() {
        let fields = form_fields(b"a=1&a=2&b=%FF&c");
        assert_eq!(fields["a"], "2");
        assert_eq!(fields["b"], "\u{FFFD}");
        assert_eq!(fields["c"], "");
    }
}
