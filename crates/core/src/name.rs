//! Key names: `purpose:customer:name`, e.g. `model:acme:gpt4`.
//!
//! A name is parsed into a [`KeyName`] once, at the edge, and passed around typed afterwards
//! ("parse, don't validate"). The separator comes from `kms.hanzo.key_isolation.namespace_separator`
//! (default `:`); it is recorded in the store at `init` so that names cannot silently change meaning.
//!
//! Components (customer and name) are 1 to 128 characters from `[A-Za-z0-9._-]`, and start with a
//! letter or digit. This keeps names safe as PKCS#11 labels, cloud key ids, file names and URL path
//! segments, and keeps the separator unambiguous.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The longest customer or name component.
pub const MAX_COMPONENT_LEN: usize = 128;

/// What a key is for. Each purpose restricts the algorithms a key may have
/// (see [`crate::Algorithm::allowed_for`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Purpose {
    /// HSM-backed API keys for the compute marketplace.
    Api,
    /// General data encryption (user data, training sets).
    Data,
    /// HMM compute-marketplace settlement signing.
    Hmm,
    /// Model-weight key-encryption keys (one per model).
    Model,
    /// Proof-of-AI attestation signing.
    Poai,
}

impl Purpose {
    pub const ALL: [Purpose; 5] = [Self::Api, Self::Data, Self::Hmm, Self::Model, Self::Poai];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Data => "data",
            Self::Hmm => "hmm",
            Self::Model => "model",
            Self::Poai => "poai",
        }
    }
}

impl FromStr for Purpose {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown purpose '{s}'; expected one of: api, data, hmm, model, poai"
                ))
            })
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The namespace separator, validated: one printable ASCII character that cannot occur inside a
/// component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Separator(char);

impl Separator {
    pub fn new(c: char) -> Result<Self> {
        if c.is_ascii_graphic() && !is_component_char(c) && c != '*' {
            Ok(Self(c))
        } else {
            Err(Error::invalid(format!(
                "namespace separator '{c}' is not allowed: use one printable ASCII character that is \
                 not a letter, digit, '.', '_', '-' or '*'"
            )))
        }
    }

    pub fn as_char(self) -> char {
        self.0
    }
}

impl Default for Separator {
    fn default() -> Self {
        Self(':')
    }
}

/// A parsed key name: purpose, customer (the tenant) and name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyName {
    purpose: Purpose,
    customer: String,
    name: String,
    separator: char,
}

impl KeyName {
    /// Parse `purpose<sep>customer<sep>name`.
    pub fn parse(s: &str, sep: Separator) -> Result<Self> {
        let sep_c = sep.as_char();
        let mut parts = s.split(sep_c);
        let (Some(purpose), Some(customer), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::invalid(format!(
                "invalid key name '{}': expected purpose{sep_c}customer{sep_c}name, e.g. model{sep_c}acme{sep_c}gpt4",
                printable(s)
            )));
        };
        let purpose: Purpose = purpose
            .parse()
            .map_err(|e: Error| e.context(format!("invalid key name '{}'", printable(s))))?;
        Self::new(purpose, customer, name, sep)
    }

    /// Build a name from its parts, checking each component.
    pub fn new(purpose: Purpose, customer: &str, name: &str, sep: Separator) -> Result<Self> {
        check_component("customer", customer)?;
        check_component("name", name)?;
        Ok(Self {
            purpose,
            customer: customer.to_owned(),
            name: name.to_owned(),
            separator: sep.as_char(),
        })
    }

    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// The customer, which is also the tenant that owns the key.
    pub fn customer(&self) -> &str {
        &self.customer
    }

    /// The last component (for model keys, the model id).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The separator this name was parsed with.
    pub fn separator(&self) -> Separator {
        Separator(self.separator)
    }

    /// The same customer and name under another purpose (`model:acme:gpt4` → `poai:acme:gpt4`).
    pub fn with_purpose(&self, purpose: Purpose) -> Self {
        Self {
            purpose,
            ..self.clone()
        }
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.separator;
        write!(f, "{}{s}{}{s}{}", self.purpose, self.customer, self.name)
    }
}

impl fmt::Debug for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyName({self})")
    }
}

fn is_component_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Check one component; the error says which component and why.
pub fn check_component(what: &str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid(format!(
            "the {what} part of a key name is empty"
        )));
    }
    if s.len() > MAX_COMPONENT_LEN {
        return Err(Error::invalid(format!(
            "the {what} part of a key name is {} characters long; the limit is {MAX_COMPONENT_LEN}",
            s.len()
        )));
    }
    if let Some(bad) = s.chars().find(|c| !is_component_char(*c)) {
        return Err(Error::invalid(format!(
            "the {what} part '{}' contains '{}'; allowed are letters, digits, '.', '_' and '-'",
            printable(s),
            bad.escape_default()
        )));
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(Error::invalid(format!(
            "the {what} part '{s}' must start with a letter or digit"
        )));
    }
    Ok(())
}

/// Render user input for an error message without control characters, and bounded in length.
fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(200).flat_map(char::escape_default).collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sep() -> Separator {
        Separator::default()
    }

    #[test]
    fn parses_the_spec_examples() {
        let n = KeyName::parse("model:customer1:gpt4", sep()).unwrap();
        assert_eq!(n.purpose(), Purpose::Model);
        assert_eq!(n.customer(), "customer1");
        assert_eq!(n.name(), "gpt4");
        assert_eq!(n.to_string(), "model:customer1:gpt4");
        assert_ne!(n, KeyName::parse("model:customer2:gpt4", sep()).unwrap());
        assert_eq!(
            n.with_purpose(Purpose::Poai).to_string(),
            "poai:customer1:gpt4"
        );
    }

    #[test]
    fn rejects_bad_names_with_a_reason() {
        let cases = [
            ("gpt4", "expected purpose:customer:name"),
            ("model:acme", "expected purpose:customer:name"),
            ("model:acme:gpt4:extra", "expected purpose:customer:name"),
            ("weights:acme:gpt4", "unknown purpose 'weights'"),
            ("model::gpt4", "customer part of a key name is empty"),
            ("model:acme:", "name part of a key name is empty"),
            ("model:ac me:gpt4", "contains ' '"),
            ("model:acme:gpt/4", "contains '/'"),
            ("model:-acme:gpt4", "must start with a letter or digit"),
            ("Model:acme:gpt4", "unknown purpose 'Model'"),
        ];
        for (input, want) in cases {
            let err = KeyName::parse(input, sep()).unwrap_err();
            assert!(
                err.to_string().contains(want),
                "{input}: got '{err}', want '{want}'"
            );
        }
        let long = format!("model:acme:{}", "a".repeat(129));
        assert!(
            KeyName::parse(&long, sep())
                .unwrap_err()
                .to_string()
                .contains("limit is 128")
        );
    }

    #[test]
    fn custom_separator() {
        let slash = Separator::new('/').unwrap();
        let n = KeyName::parse("poai/acme/llama-3.1", slash).unwrap();
        assert_eq!(n.to_string(), "poai/acme/llama-3.1");
        assert!(KeyName::parse("poai:acme:llama", slash).is_err());
        assert!(Separator::new('a').is_err());
        assert!(Separator::new('-').is_err());
        assert!(Separator::new(' ').is_err());
    }

    proptest! {
        #[test]
        fn round_trips(
            p in prop::sample::select(Purpose::ALL.to_vec()),
            c in "[a-zA-Z0-9][a-zA-Z0-9._-]{0,40}",
            n in "[a-zA-Z0-9][a-zA-Z0-9._-]{0,40}",
        ) {
            let name = KeyName::new(p, &c, &n, sep()).unwrap();
            let parsed = KeyName::parse(&name.to_string(), sep()).unwrap();
            prop_assert_eq!(&parsed, &name);
            prop_assert_eq!(parsed.customer(), c.as_str());
        }

        #[test]
        fn never_panics_and_accepts_only_canonical(s in "\\PC{0,80}") {
            if let Ok(n) = KeyName::parse(&s, sep()) {
                prop_assert_eq!(n.to_string(), s);
            }
        }
    }
}
