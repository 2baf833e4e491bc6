//! The shape of an e-mail address, one rule for the core (organizers' users, buyers) and the edge
//! (which extends a checkout's hold only for a body the core could take).

/// An e-mail address's shape: one `@`, a non-empty local part, a dotted domain, 3 to 254
/// characters, no white space or control characters. (The mail server is the final judge.)
pub fn valid_email(s: &str) -> bool {
    (3..=254).contains(&s.len())
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && s.split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.') && !domain.contains('@'))
}
