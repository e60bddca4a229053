//! Money as integer minor units with its currency: one type, one way in from each source, one
//! way out to the account DB.
//!
//! Providers state amounts in minor units already (Stripe and Lemon Squeezy: cents; Toss: won,
//! which has no minor unit), so no scaling happens anywhere. `subscription_events.amount_cents`
//! is a 32-bit `INTEGER` on both back-ends: an amount that does not fit is refused with
//! [`MoneyError::TooLarge`] when the row is written, never stored as NULL.

use std::fmt;

/// An ISO 4217 code: three ASCII letters, upper case (`subscription_events.currency` is
/// `VARCHAR(3)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub const KRW: Currency = Currency(*b"KRW");
    pub const USD: Currency = Currency(*b"USD");

    /// A provider's code in any case (`usd`, `USD`); `None` unless it is three ASCII letters.
    pub fn parse(code: &str) -> Option<Currency> {
        let b: [u8; 3] = code.trim().as_bytes().try_into().ok()?;
        b.iter()
            .all(u8::is_ascii_alphabetic)
            .then(|| Currency(b.map(|c| c.to_ascii_uppercase())))
    }

    pub fn as_str(&self) -> &str {
        // Three ASCII letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount in minor units of `currency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The amount does not fit where it has to go (a configured price over `i64`, an amount
    /// over the 32-bit `amount_cents` column).
    #[error("{0} does not fit {1}")]
    TooLarge(String, &'static str),
}

impl Money {
    pub fn new(minor: i64, currency: Currency) -> Money {
        Money { minor, currency }
    }

    /// A configured price (`tiers.toml`, whole units of a currency without minor units such as
    /// KRW): the one conversion from the tier table's `u64`.
    pub fn from_price(price: u64, currency: Currency) -> Result<Money, MoneyError> {
        i64::try_from(price)
            .map(|minor| Money { minor, currency })
            .map_err(|_| MoneyError::TooLarge(format!("{price} {currency}"), "an i64"))
    }

    /// An amount a provider sent (`amount_paid`/`total` and `currency` of its JSON): only an
    /// integer amount together with a currency code is money; anything else is no amount.
    pub fn from_provider(
        amount: &serde_json::Value,
        currency: &serde_json::Value,
    ) -> Option<Money> {
        Some(Money {
            minor: amount.as_i64()?,
            currency: Currency::parse(currency.as_str()?)?,
        })
    }

    /// The value of the 32-bit `subscription_events.amount_cents` column.
    pub fn amount_cents(&self) -> Result<i32, MoneyError> {
        i32::try_from(self.minor)
            .map_err(|_| MoneyError::TooLarge(self.to_string(), "subscription_events.amount_cents"))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.minor, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn currencies_are_three_letters_upper_case() {
        assert_eq!(Currency::parse("usd"), Some(Currency::USD));
        assert_eq!(Currency::parse(" KRW "), Some(Currency::KRW));
        for bad in ["", "us", "usdx", "u$d", "원원"] {
            assert_eq!(Currency::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn provider_amounts_need_their_currency() {
        assert_eq!(
            Money::from_provider(&json!(9900), &json!("usd")),
            Some(Money::new(9900, Currency::USD))
        );
        assert_eq!(Money::from_provider(&json!(9900), &json!(null)), None);
        assert_eq!(Money::from_provider(&json!("9900"), &json!("USD")), None);
        assert_eq!(Money::from_provider(&json!(null), &json!("USD")), None);
    }

    #[test]
    fn amounts_that_do_not_fit_are_errors() {
        let max = Money::new(i64::from(i32::MAX), Currency::KRW);
        assert_eq!(max.amount_cents(), Ok(i32::MAX));
        let over = Money::new(i64::from(i32::MAX) + 1, Currency::KRW);
        assert!(matches!(over.amount_cents(), Err(MoneyError::TooLarge(..))));
        assert!(Money::new(i64::MIN, Currency::USD).amount_cents().is_err());
        assert_eq!(
            Money::from_price(29_000, Currency::KRW),
            Ok(Money::new(29_000, Currency::KRW))
        );
        assert!(Money::from_price(u64::MAX, Currency::KRW).is_err());
    }
}
