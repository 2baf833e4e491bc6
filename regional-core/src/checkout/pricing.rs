//! Pricing an order, in integer minor units. Pure: the checkout handler loads the inputs.
//!
//! Per line (one seat or one GA place), in this order:
//! 1. **price**: the seated tier's price for the seat's zone (its base price when the zone has
//!    none), or the GA tier's price;
//! 2. **discount** (promo code, only on the tiers it names): a percentage of each line's price,
//!    rounded half up; or a fixed amount off the order, capped at the eligible lines' total and
//!    spread over them in proportion to their prices (largest remainder first, so the parts add up
//!    to the whole exactly);
//! 3. **service fee**: `per_ticket_minor` plus `percent_bps` basis points of the discounted price,
//!    rounded half up;
//! 4. **tax**: `rate_bps` basis points of (discounted price + fee), rounded half up and added
//!    (`included: false`); or, when prices already include it (`included: true`), the tax part
//!    contained in that amount, `amount × rate / (10000 + rate)` rounded half up, shown but not
//!    added.
//!
//! Totals are sums of the lines, so an order and its lines always agree.

use serde::{Deserialize, Serialize};

/// An event's fees and tax (stored in `events.pricing`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PricingSettings {
    pub service_fee: ServiceFee,
    pub tax: Tax,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceFee {
    /// A fixed fee per ticket, minor units.
    pub per_ticket_minor: i64,
    /// A share of each discounted ticket price, in basis points (250 = 2.5 %).
    pub percent_bps: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Tax {
    /// Basis points (1900 = 19 %).
    pub rate_bps: i64,
    /// True when prices and fees already include the tax (it is shown, not added).
    pub included: bool,
}

impl PricingSettings {
    /// Field errors, if any (`pricing.` prefixed).
    pub fn validate(&self) -> Vec<(&'static str, &'static str)> {
        let mut errors = Vec::new();
        if !(0..=10_000_000).contains(&self.service_fee.per_ticket_minor) {
            errors.push(("service_fee.per_ticket_minor", "must be 0 to 10000000"));
        }
        if !(0..=5_000).contains(&self.service_fee.percent_bps) {
            errors.push(("service_fee.percent_bps", "must be 0 to 5000 (50 %)"));
        }
        if !(0..=5_000).contains(&self.tax.rate_bps) {
            errors.push(("tax.rate_bps", "must be 0 to 5000 (50 %)"));
        }
        errors
    }
}

/// A promo code's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discount {
    Percent(i64),
    AmountOff(i64),
}

/// One line to price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineIn {
    pub price_minor: i64,
    /// Whether the promo code applies to this line's tier.
    pub discountable: bool,
}

/// One priced line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LinePrice {
    pub price_minor: i64,
    pub discount_minor: i64,
    pub fee_minor: i64,
    pub tax_minor: i64,
}

/// An order's totals.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema,
)]
pub struct Totals {
    pub subtotal_minor: i64,
    pub discount_minor: i64,
    pub fee_minor: i64,
    pub tax_minor: i64,
    pub tax_included: bool,
    pub total_minor: i64,
}

/// `numerator / denominator`, rounded half up (non-negative operands).
fn div_round(numerator: i128, denominator: i128) -> i64 {
    ((2 * numerator + denominator) / (2 * denominator)) as i64
}

/// Prices the lines; the per-line breakdown and the totals.
pub fn price(
    lines: &[LineIn],
    discount: Option<Discount>,
    settings: &PricingSettings,
) -> (Vec<LinePrice>, Totals) {
    let mut out: Vec<LinePrice> =
        lines.iter().map(|l| LinePrice { price_minor: l.price_minor.max(0), ..Default::default() }).collect();
    match discount {
        Some(Discount::Percent(p)) => {
            let p = p.clamp(0, 100);
            for (line, input) in out.iter_mut().zip(lines) {
                if input.discountable {
                    line.discount_minor = div_round(i128::from(line.price_minor) * i128::from(p), 100);
                }
            }
        }
        Some(Discount::AmountOff(amount)) => {
            let eligible: i64 =
                out.iter().zip(lines).filter(|(_, i)| i.discountable).map(|(l, _)| l.price_minor).sum();
            let off = amount.clamp(0, eligible);
            if eligible > 0 && off > 0 {
                // Floor shares, then the remainder one unit at a time to the largest fractions.
                let mut parts: Vec<(usize, i64, i128)> = Vec::new();
                let mut given = 0;
                for (i, (line, input)) in out.iter().zip(lines).enumerate() {
                    if input.discountable {
                        let exact = i128::from(line.price_minor) * i128::from(off);
                        let share = (exact / i128::from(eligible)) as i64;
                        parts.push((i, share, exact % i128::from(eligible)));
                        given += share;
                    }
                }
                parts.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
                let mut left = off - given;
                for (i, share, _) in &parts {
                    let extra = i64::from(left > 0);
                    left -= extra;
                    out[*i].discount_minor = share + extra;
                }
            }
        }
        None => {}
    }
    for line in &mut out {
        let net = line.price_minor - line.discount_minor;
        line.fee_minor = settings.service_fee.per_ticket_minor
            + div_round(i128::from(net) * i128::from(settings.service_fee.percent_bps), 10_000);
        let taxable = i128::from(net + line.fee_minor);
        let rate = i128::from(settings.tax.rate_bps);
        line.tax_minor = if settings.tax.included {
            div_round(taxable * rate, 10_000 + rate)
        } else {
            div_round(taxable * rate, 10_000)
        };
    }
    let mut totals = Totals { tax_included: settings.tax.included, ..Default::default() };
    for line in &out {
        totals.subtotal_minor += line.price_minor;
        totals.discount_minor += line.discount_minor;
        totals.fee_minor += line.fee_minor;
        totals.tax_minor += line.tax_minor;
    }
    totals.total_minor = totals.subtotal_minor - totals.discount_minor
        + totals.fee_minor
        + if settings.tax.included { 0 } else { totals.tax_minor };
    (out, totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines(prices: &[i64]) -> Vec<LineIn> {
        prices.iter().map(|&p| LineIn { price_minor: p, discountable: true }).collect()
    }

    #[test]
    fn fees_and_added_tax_round_half_up_per_line() {
        let settings = PricingSettings {
            service_fee: ServiceFee { per_ticket_minor: 100, percent_bps: 250 },
            tax: Tax { rate_bps: 1900, included: false },
        };
        let (out, totals) = price(&lines(&[4999, 4999]), Some(Discount::Percent(10)), &settings);
        // 4999 - 500 (499.9 rounds up) = 4499; fee 100 + 112 (112.475) = 212; tax 19 % of 4711 = 895 (895.09).
        assert_eq!(
            out[0],
            LinePrice { price_minor: 4999, discount_minor: 500, fee_minor: 212, tax_minor: 895 }
        );
        assert_eq!(totals.total_minor, 2 * (4499 + 212 + 895));
    }

    #[test]
    fn included_tax_is_shown_not_added() {
        let settings = PricingSettings { tax: Tax { rate_bps: 1900, included: true }, ..Default::default() };
        let (out, totals) = price(&lines(&[11900]), None, &settings);
        assert_eq!(out[0].tax_minor, 1900);
        assert_eq!(totals.total_minor, 11900);
    }

    #[test]
    fn an_amount_off_is_capped_and_spread_exactly() {
        let (out, totals) =
            price(&lines(&[1000, 1000, 1000]), Some(Discount::AmountOff(1000)), &Default::default());
        assert_eq!(out.iter().map(|l| l.discount_minor).collect::<Vec<_>>(), vec![334, 333, 333]);
        assert_eq!(totals.total_minor, 2000);
        let (_, totals) = price(&lines(&[500]), Some(Discount::AmountOff(1000)), &Default::default());
        assert_eq!(totals.total_minor, 0, "never below zero");
    }

    #[test]
    fn a_promo_only_touches_its_tiers() {
        let input = vec![
            LineIn { price_minor: 1000, discountable: false },
            LineIn { price_minor: 1000, discountable: true },
        ];
        let (out, _) = price(&input, Some(Discount::Percent(50)), &Default::default());
        assert_eq!((out[0].discount_minor, out[1].discount_minor), (0, 500));
    }

    proptest! {
        #[test]
        fn totals_are_the_sum_of_lines_and_never_negative(
            prices in proptest::collection::vec(0i64..1_000_000, 1..10),
            off in 0i64..5_000_000,
            pct in 0i64..=100,
            use_pct: bool,
            fee in 0i64..1000, bps in 0i64..5000, tax in 0i64..5000, included: bool,
        ) {
            let settings = PricingSettings { service_fee: ServiceFee { per_ticket_minor: fee, percent_bps: bps }, tax: Tax { rate_bps: tax, included } };
            let discount = if use_pct { Discount::Percent(pct) } else { Discount::AmountOff(off) };
            let (out, t) = price(&lines(&prices), Some(discount), &settings);
            prop_assert_eq!(t.discount_minor, out.iter().map(|l| l.discount_minor).sum::<i64>());
            for l in &out {
                prop_assert!(l.discount_minor >= 0 && l.discount_minor <= l.price_minor);
            }
            if !use_pct {
                prop_assert_eq!(t.discount_minor, off.min(prices.iter().sum()));
            }
            prop_assert!(t.total_minor >= 0);
            prop_assert_eq!(t.total_minor, t.subtotal_minor - t.discount_minor + t.fee_minor + if included { 0 } else { t.tax_minor });
        }
    }
}
