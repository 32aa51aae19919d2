//! Principals, roles and the permission check (pipeline steps 1 and 2).
//!
//! A principal is who is asking. It is scoped to one tenant (a customer), or to all tenants for
//! the local operator who holds the data directory. A key of another tenant answers exactly like
//! a missing key, so a caller cannot learn which keys exist elsewhere.

use std::fmt;

use hanzo_kms_core::{Error, ErrorKind, KeyName, Result};

use crate::operation::Roles;

/// A role. `Admin` implies every other role. Variants are in alphabetical order.
///
/// `Manage` is the key administrator's role, apart from the key users' (`encrypt`, `decrypt`,
/// `sign`, `verify`), as AWS KMS separates them: it creates, rotates, enables, disables and
/// destroys keys and keyspaces, shows and lists them, and manages tokens with at most its own
/// roles, but it encrypts, decrypts and signs nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Audit,
    Decrypt,
    Encrypt,
    Manage,
    Sign,
    Verify,
}

impl Role {
    /// This role alone, as an operation's role list.
    pub fn alone(self) -> &'static [Role] {
        match self {
            Self::Admin => &[Self::Admin],
            Self::Audit => &[Self::Audit],
            Self::Decrypt => &[Self::Decrypt],
            Self::Encrypt => &[Self::Encrypt],
            Self::Manage => &[Self::Manage],
            Self::Sign => &[Self::Sign],
            Self::Verify => &[Self::Verify],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Audit => "audit",
            Self::Decrypt => "decrypt",
            Self::Encrypt => "encrypt",
            Self::Manage => "manage",
            Self::Sign => "sign",
            Self::Verify => "verify",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Who: `local:alice`, `token:3f2a…`.
    pub id: String,
    /// The tenant, or `None` for all tenants (the local operator only).
    pub tenant: Option<String>,
    pub roles: Vec<Role>,
    /// Key-name patterns the principal may use (`model:acme:*`); empty means all of its tenant's.
    pub patterns: Vec<String>,
}

impl Principal {
    /// The operator at the console: whoever can read the data directory and the master key.
    pub fn local_operator() -> Self {
        let user = std::env::var("USER")
            .ok()
            .filter(|u| {
                !u.is_empty()
                    && u.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            })
            .unwrap_or_else(|| "operator".to_owned());
        Self {
            id: format!("local:{user}"),
            tenant: None,
            roles: vec![Role::Admin],
            patterns: Vec::new(),
        }
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.iter().any(|r| *r == role || *r == Role::Admin)
    }

    /// Whether the principal's tenant owns this key. Foreign keys must be answered as missing.
    pub fn owns(&self, key: &KeyName) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == key.customer())
    }

    /// Whether the principal's key patterns (if any) admit this key.
    pub fn may_see(&self, key: &KeyName) -> bool {
        let name = key.to_string();
        self.patterns.is_empty() || self.patterns.iter().any(|p| glob_match(p, &name))
    }

    /// The tenant for audit records: the tenant, or `*` for all.
    pub fn tenant_label(&self) -> &str {
        self.tenant.as_deref().unwrap_or("*")
    }

    /// Step 2 of the pipeline for one role: tenant, then role, then name pattern.
    pub fn authorize(&self, role: Role, key: Option<&KeyName>) -> Result<()> {
        self.authorize_op(Roles::Any(role.alone()), key)
    }

    /// Step 2 of the pipeline for an operation's roles: tenant, then roles, then name pattern.
    /// A foreign tenant's key is refused exactly like a missing one.
    pub fn authorize_op(&self, roles: Roles, key: Option<&KeyName>) -> Result<()> {
        if let Some(key) = key.filter(|k| !self.owns(k)) {
            return Err(not_found(key));
        }
        let allowed = match roles {
            Roles::All(r) => r.iter().all(|r| self.has_role(*r)),
            Roles::Any(r) => r.iter().any(|r| self.has_role(*r)),
        };
        if !allowed {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!("{} lacks the {} role", self.id, roles.describe()),
            ));
        }
        if let Some(key) = key {
            let name = key.to_string();
            if !self.patterns.is_empty() && !self.patterns.iter().any(|p| glob_match(p, &name)) {
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    format!("{} may not use key {name}", self.id),
                ));
            }
        }
        Ok(())
    }
}

/// The one answer for a missing key and for a foreign tenant's key.
pub fn not_found(key: &KeyName) -> Error {
    Error::new(ErrorKind::NotFound, format!("key {key} not found"))
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use hanzo_kms_core::Separator;

    fn key(s: &str) -> KeyName {
        KeyName::parse(s, Separator::default()).unwrap()
    }

    fn tenant(t: &str, roles: &[Role], patterns: &[&str]) -> Principal {
        Principal {
            id: "token:t".into(),
            tenant: Some(t.into()),
            roles: roles.to_vec(),
            patterns: patterns.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn foreign_key_looks_missing() {
        let p = tenant("acme", &[Role::Admin], &[]);
        let foreign = p
            .authorize(Role::Decrypt, Some(&key("model:globex:gpt4")))
            .unwrap_err();
        let missing = not_found(&key("model:globex:gpt4"));
        assert_eq!(foreign.kind(), missing.kind());
        assert_eq!(foreign.to_string(), missing.to_string());
        assert!(
            p.authorize(Role::Decrypt, Some(&key("model:acme:gpt4")))
                .is_ok()
        );
    }

    #[test]
    fn roles_and_patterns() {
        let p = tenant("acme", &[Role::Decrypt], &["model:acme:*"]);
        assert!(
            p.authorize(Role::Decrypt, Some(&key("model:acme:gpt4")))
                .is_ok()
        );
        assert_eq!(
            p.authorize(Role::Sign, Some(&key("model:acme:gpt4")))
                .unwrap_err()
                .kind(),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            p.authorize(Role::Decrypt, Some(&key("data:acme:x")))
                .unwrap_err()
                .kind(),
            ErrorKind::PermissionDenied
        );
        assert!(
            Principal::local_operator()
                .authorize(Role::Sign, Some(&key("poai:any:x")))
                .is_ok()
        );
    }

    #[test]
    fn glob() {
        assert!(glob_match("model:acme:*", "model:acme:gpt4"));
        assert!(glob_match("*:acme:*", "poai:acme:x"));
        assert!(!glob_match("model:acme:*", "model:acme2:gpt4"));
        assert!(glob_match("model:acme:gpt4", "model:acme:gpt4"));
        assert!(!glob_match("model:acme:gpt", "model:acme:gpt4"));
    }
}
