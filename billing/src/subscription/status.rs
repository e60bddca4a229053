//! [`Status`], the stored type of `users.subscription_status`: decoded from and encoded to its
//! text form here and nowhere else, so no other code compares status strings.

use serde::{Serialize, Serializer};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::Database;
use std::fmt;
use std::str::FromStr;

/// Where an account's subscription stands (`users.subscription_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// `none`: never subscribed.
    None,
    /// `active`: paid and renewing.
    Active,
    /// `cancelled`: will not renew; the paid period is still running and the tier is kept.
    Cancelled,
    /// `past_due`: a renewal payment failed; the tier is kept until the grace period ends.
    PastDue,
    /// `expired`: over; the account is back on the first tier.
    Expired,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::None,
        Status::Active,
        Status::Cancelled,
        Status::PastDue,
        Status::Expired,
    ];

    /// The stored and API form.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::None => "none",
            Status::Active => "active",
            Status::Cancelled => "cancelled",
            Status::PastDue => "past_due",
            Status::Expired => "expired",
        }
    }

    /// A subscription that is running (paid period or grace period not over).
    pub fn is_live(self) -> bool {
        matches!(self, Status::Active | Status::Cancelled | Status::PastDue)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown subscription status {0:?}")]
pub struct UnknownStatus(String);

impl FromStr for Status {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Status, UnknownStatus> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

// The DB edge: a text column on both back-ends, read and written through `as_str`/`from_str`.

impl<DB: Database> sqlx::Type<DB> for Status
where
    str: sqlx::Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <str as sqlx::Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <str as sqlx::Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: Database> sqlx::Decode<'r, DB> for Status
where
    &'r str: sqlx::Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Status, BoxDynError> {
        Ok(<&'r str as sqlx::Decode<'r, DB>>::decode(value)?.parse()?)
    }
}

impl<'q, DB: Database> sqlx::Encode<'q, DB> for Status
where
    &'q str: sqlx::Encode<'q, DB>,
{
    fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer<'q>) -> Result<IsNull, BoxDynError> {
        <&'q str as sqlx::Encode<'q, DB>>::encode(self.as_str(), buf)
    }
}

#[cfg(test)]
mod tests {
    use super::Status;

    #[test]
    fn text_forms_round_trip() {
        for st in Status::ALL {
            assert_eq!(st.as_str().parse::<Status>().unwrap(), st);
            assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
        }
        assert!("canceled".parse::<Status>().is_err());
        assert!("".parse::<Status>().is_err());
    }
}
