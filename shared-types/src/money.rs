//! Amounts in minor units as people and spreadsheets read them (the core's mails and exports, the
//! edge's pages).

/// An amount in minor units in the currency's major unit (`12.50`; `1250` for zero-decimal
/// currencies), as exports and mails show it.
pub fn decimal(minor: i64, currency: &str) -> String {
    const ZERO_DECIMAL: [&str; 8] = ["JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF"];
    if ZERO_DECIMAL.contains(&currency) {
        return minor.to_string();
    }
    let sign = if minor < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", minor.unsigned_abs() / 100, minor.unsigned_abs() % 100)
}

/// An amount in minor units as people read it (`12.50 EUR`).
pub fn money(minor: i64, currency: &str) -> String {
    format!("{} {currency}", decimal(minor, currency))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_reads_as_people_write_it() {
        assert_eq!(money(1250, "EUR"), "12.50 EUR");
        assert_eq!(money(5, "USD"), "0.05 USD");
        assert_eq!(money(-5, "USD"), "-0.05 USD");
        assert_eq!(money(1250, "JPY"), "1250 JPY");
    }
}
