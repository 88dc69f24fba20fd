//! Users and roles.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who may do what: every route names the role it needs; there is no implicit one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Analyst,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "customer" => Some(Role::Customer),
            "analyst" => Some(Role::Analyst),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Roles that see other people's data or change the service sign in with a second
    /// factor.
    pub fn requires_mfa(self) -> bool {
        matches!(self, Role::Analyst | Role::Admin)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserId(pub Uuid);

/// An email address as an account name: trimmed, at most 254 bytes, one `@` with a
/// non-empty local part and a dotted domain, no whitespace or control characters; the
/// domain is lowercased (the local part is kept as given, as mail servers do).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an email address")]
pub struct InvalidEmail;

impl Email {
    pub fn parse(text: &str) -> Result<Self, InvalidEmail> {
        let text = text.trim();
        if text.is_empty() || text.len() > 254 {
            return Err(InvalidEmail);
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InvalidEmail);
        }
        let (local, domain) = text.split_once('@').ok_or(InvalidEmail)?;
        if local.is_empty() || local.len() > 64 || domain.contains('@') {
            return Err(InvalidEmail);
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        };
        if labels.len() < 2 || !labels.iter().all(label_ok) {
            return Err(InvalidEmail);
        }
        Ok(Email(format!("{local}@{}", domain.to_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    /// One role per account; roles are ranked (customer < analyst < admin) and a higher
    /// one holds every permission of a lower one.
    pub role: Role,
    /// Whether a TOTP secret is enrolled and verified.
    pub mfa_enrolled: bool,
}

impl User {
    /// Whether this account holds the permissions of `role`.
    pub fn has(&self, role: Role) -> bool {
        self.role >= role
    }

    /// Whether this account must pass a second factor to sign in, by the built-in policy
    /// (the configured policy may name other roles; see `ShopPolicy`).
    pub fn requires_mfa(&self) -> bool {
        self.role.requires_mfa()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse("  Alice@Example.ORG ")
                .expect("valid")
                .as_str(),
            "Alice@example.org"
        );
        for bad in [
            "",
            "alice",
            "@example.org",
            "alice@",
            "alice@example",
            "alice@@example.org",
            "al ice@example.org",
            "alice@-example.org",
            "alice@exa_mple.org",
            "alice@example..org",
            "a\u{0}@example.org",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@example.org", "a".repeat(65))).is_err());
    }

    #[test]
    fn mfa_is_required_for_analysts_and_admins() {
        let user = |role: Role| User {
            id: UserId(Uuid::nil()),
            email: Email::parse("a@example.org").expect("valid"),
            role,
            mfa_enrolled: false,
        };
        assert!(!user(Role::Customer).requires_mfa());
        assert!(user(Role::Analyst).requires_mfa());
        assert!(user(Role::Admin).requires_mfa());
        assert!(user(Role::Admin).has(Role::Customer));
        assert!(!user(Role::Analyst).has(Role::Admin));
        assert_eq!(Role::parse("admin"), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
    }

    proptest! {
        /// Untrusted input never panics, and what parses is within the limits.
        #[test]
        fn email_parsing_never_panics(text in ".{0,300}") {
            if let Ok(email) = Email::parse(&text) {
                prop_assert!(email.as_str().len() <= 254);
                prop_assert!(!email.as_str().chars().any(char::is_whitespace));
            }
        }
    }
}
