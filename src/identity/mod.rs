//! Stable user identity: `user:` + uuid v5 of the normalized e-mail address.
//!
//! The ids are byte-identical to the ones the ltcai brain gives, so the same person has the same
//! id in both. This module only computes ids; it never touches a store (see [`migrate`] for that).

pub mod migrate;

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The uuid v5 namespace shared with the ltcai brain. Changing it changes every user id.
pub const NAMESPACE: Uuid = Uuid::from_u128(0x5d6d4480_cf79_49c3_a6d0_4c6eec3224d6);

/// Prefix of every user id.
pub const PREFIX: &str = "user:";

/// A user id such as `user:1b4e28ba-2fa1-5ad2-8b8f-1a2b3c4d5e6f`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// The stable id for an e-mail address (normalized first).
    pub fn for_email(email: &str) -> UserId {
        let normalized = normalize_email(email);
        let uuid = Uuid::new_v5(&NAMESPACE, normalized.as_bytes());
        UserId(format!("{PREFIX}{uuid}"))
    }

    /// Accepts an existing id; `None` unless it starts with `user:`.
    pub fn parse(s: &str) -> Option<UserId> {
        (s.starts_with(PREFIX) && s.len() > PREFIX.len()).then(|| UserId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Trim and lowercase: two addresses that differ only in case or surrounding space are one user.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Whether a value (after normalization) looks like an e-mail address: one `@` with something on
/// both sides and no whitespace. Deliberately loose: identity columns hold either ids, addresses
/// or sentinels like `system`, and only the addresses must be told apart.
pub fn is_email(value: &str) -> bool {
    let v = value.trim();
    if v.starts_with(PREFIX) || v.chars().any(char::is_whitespace) {
        return false;
    }
    match v.split_once('@') {
        Some((local, domain)) => !local.is_empty() && !domain.is_empty() && !domain.contains('@'),
        None => false,
    }
}

/// The e-mail the daemon acts as when nothing is configured: the OS user at `localhost`.
pub fn default_email() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| format!("uid{}", rustix::process::getuid().as_raw()));
    format!("{}@localhost", user.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_id(email: &str, expected: &str) {
        assert_eq!(
            UserId::for_email(email).as_str(),
            expected,
            "email {email:?}"
        );
    }

    #[test]
    fn ids_are_uuid_v5_of_normalized_email() {
        // Expected values computed independently: python3 -c 'import uuid;
        // print(uuid.uuid5(uuid.UUID("5d6d4480-cf79-49c3-a6d0-4c6eec3224d6"), "alice@example.com"))'
        check_id(
            "alice@example.com",
            "user:f457d930-b748-5bc1-9b3b-8a81d7555020",
        );
        check_id(
            "  Alice@Example.COM ",
            "user:f457d930-b748-5bc1-9b3b-8a81d7555020",
        );
        check_id(
            "bob@example.org",
            "user:efb81798-4ac8-532b-8f66-ede02501248d",
        );
    }

    fn check_email(value: &str, expected: bool) {
        assert_eq!(is_email(value), expected, "value {value:?}");
    }

    #[test]
    fn email_detection() {
        check_email("a@b", true);
        check_email("  Alice@Example.COM ", true);
        check_email("user:5d6d4480-cf79-49c3-a6d0-4c6eec3224d6", false);
        check_email("system", false);
        check_email("", false);
        check_email("@b", false);
        check_email("a@", false);
        check_email("a b@c", false);
        check_email("a@b@c", false);
    }

    #[test]
    fn parse_accepts_only_prefixed_ids() {
        assert!(UserId::parse("user:x").is_some());
        assert!(UserId::parse("user:").is_none());
        assert!(UserId::parse("alice@example.com").is_none());
    }
}
