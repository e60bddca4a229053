//! People and their accounts (docs/billing-api.md, "People"): an account (`users`) belongs to
//! people known by e-mail address — its owner and invited members, each with a [`Role`] — who
//! prove an address only by opening a single-use link mailed to it, and then hold a session.
//!
//! Files: `tokens` (the links: issue, consume), `sessions` (the cookie, CSRF, listing and
//! revoking), `people` (memberships, invitations and the role rules), `flows` (register, sign-in
//! and opening a link: each one transaction with its mail and audit rows), `audit`
//! (`audit_events`), `limits` (abuse limits on requests that send mail), `tx` (the statements
//! these write inside a caller's transaction, on either back-end).

pub mod audit;
pub mod flows;
pub mod limits;
pub mod people;
pub mod sessions;
pub mod tokens;
mod tx;

pub use tx::IdTx;

use serde::Serialize;

/// A person's role in an account. Ordered: `Member < Admin < Owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }

    /// Whether someone with this role may invite, remove, or change the role of a person whose
    /// role is `other`: only roles strictly below one's own (the owner manages admins and
    /// members, an admin manages members). Nobody makes or unmakes an owner.
    pub fn manages(self, other: Role) -> bool {
        other < self && self >= Role::Admin
    }
}

/// Who did something, for the audit log and for what they create.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The acting membership (the owner's member id is the account id).
    pub member_id: uuid::Uuid,
    /// The person's address.
    pub email: String,
    /// `audit_events.actor`: the address, or `key:<prefix>` for a request made with a key.
    pub label: String,
    /// The client's IP address, when known.
    pub ip: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::Role::{self, *};

    #[test]
    fn roles_manage_only_below_themselves() {
        assert!(Owner.manages(Admin) && Owner.manages(Member) && Admin.manages(Member));
        for (a, b) in [
            (Owner, Owner),
            (Admin, Admin),
            (Admin, Owner),
            (Member, Member),
        ] {
            assert!(!a.manages(b), "{a:?} {b:?}");
        }
        for r in [Owner, Admin, Member] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("Owner"), None);
    }
}
