//! Shared access authorization rules of Service Bus namespaces and the shared access
//! signatures (SAS tokens) signed with their keys, without I/O.
//!
//! A rule has a name, a set of rights (`Listen`, `Send`, `Manage`) and two keys. A token is
//! `SharedAccessSignature sr=<resource URI>&sig=<signature>&se=<expiry>&skn=<rule name>`,
//! with URL-encoded values in any order. The signature is the base64 HMAC-SHA256, keyed
//! with the key's base64 text as bytes, over the `sr` value as it appears in the token, a
//! newline and the `se` value, as every Azure SDK's SAS token provider computes it.

use std::collections::BTreeSet;
use std::fmt;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use time::OffsetDateTime;

/// Name of the rule with every right that Azure creates with each namespace.
pub const ROOT_RULE_NAME: &str = "RootManageSharedAccessKey";
/// Most authorization rules a namespace may have (Service Bus quotas page).
pub const MAX_RULES_PER_NAMESPACE: usize = 12;
/// Prefix of every shared access signature.
const SAS_PREFIX: &str = "SharedAccessSignature ";
/// Random bytes in a generated key, which Azure shows as 44 base64 characters.
const KEY_BYTES: usize = 32;

/// A right an authorization rule grants, with the spelling ARM uses in `rights`. The
/// variants are in alphabetical order, the order ARM lists the root rule's rights in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccessRight {
    Listen,
    Manage,
    Send,
}

impl AccessRight {
    pub const ALL: [AccessRight; 3] = [AccessRight::Listen, AccessRight::Manage, AccessRight::Send];

    pub fn as_str(self) -> &'static str {
        match self {
            AccessRight::Manage => "Manage",
            AccessRight::Send => "Send",
            AccessRight::Listen => "Listen",
        }
    }

    /// Parses a right without regard to case, as ARM reads enum values.
    pub fn parse(text: &str) -> Option<AccessRight> {
        Self::ALL
            .into_iter()
            .find(|right| right.as_str().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for AccessRight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rights of one rule. `Manage` implies `Send` and `Listen`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessRights(BTreeSet<AccessRight>);

impl AccessRights {
    pub fn new(rights: impl IntoIterator<Item = AccessRight>) -> Self {
        Self(rights.into_iter().collect())
    }

    pub fn all() -> Self {
        Self::new(AccessRight::ALL)
    }

    /// Returns whether the rights include `right`, directly or through `Manage`.
    pub fn allow(&self, right: AccessRight) -> bool {
        self.0.contains(&right) || self.0.contains(&AccessRight::Manage)
    }

    pub fn contains(&self, right: AccessRight) -> bool {
        self.0.contains(&right)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = AccessRight> + '_ {
        self.0.iter().copied()
    }
}

/// Which of a rule's two keys an operation names (`keyType` of `regenerateKeys`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Primary,
    Secondary,
}

impl KeyType {
    /// Parses `PrimaryKey` or `SecondaryKey` without regard to case.
    pub fn parse(text: &str) -> Option<KeyType> {
        if text.eq_ignore_ascii_case("PrimaryKey") {
            Some(KeyType::Primary)
        } else if text.eq_ignore_ascii_case("SecondaryKey") {
            Some(KeyType::Secondary)
        } else {
            None
        }
    }
}

/// A namespace's shared access authorization rule.
#[derive(Clone)]
pub struct AuthorizationRule {
    /// The name as created; lookups ignore case.
    pub name: String,
    pub rights: AccessRights,
    pub primary_key: String,
    pub secondary_key: String,
}

impl AuthorizationRule {
    /// Builds a rule with two fresh random keys.
    pub fn new(name: impl Into<String>, rights: AccessRights) -> Self {
        Self {
            name: name.into(),
            rights,
            primary_key: generate_key(),
            secondary_key: generate_key(),
        }
    }

    /// Builds the `RootManageSharedAccessKey` rule that every new namespace has.
    pub fn root() -> Self {
        Self::new(ROOT_RULE_NAME, AccessRights::all())
    }

    /// Replaces one key with `key`, or with a fresh random key when `key` is `None`.
    pub fn regenerate(&mut self, key_type: KeyType, key: Option<String>) {
        let key = key.unwrap_or_else(generate_key);
        match key_type {
            KeyType::Primary => self.primary_key = key,
            KeyType::Secondary => self.secondary_key = key,
        }
    }

    /// Returns whether `token` carries a valid signature made with either key.
    pub fn signed(&self, token: &SharedAccessSignature) -> bool {
        [&self.primary_key, &self.secondary_key]
            .into_iter()
            .any(|key| token.is_signed_with(key))
    }
}

// The keys are secrets: never print them, not even in debug output.
impl fmt::Debug for AuthorizationRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationRule")
            .field("name", &self.name)
            .field("rights", &self.rights)
            .finish_non_exhaustive()
    }
}

/// Generates a key as Azure shows it: 32 random bytes in standard base64 with padding.
pub fn generate_key() -> String {
    let mut bytes = [0u8; KEY_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

/// A parsed shared access signature.
#[derive(Clone)]
pub struct SharedAccessSignature {
    /// The decoded resource URI that the token is valid for, and the nodes below it.
    pub resource: String,
    /// The `skn` field: the name of the rule whose key signed the token.
    pub key_name: String,
    pub expires_at: OffsetDateTime,
    /// The `sr` field as it appears in the token, still URL-encoded, which is what is signed.
    signed_resource: String,
    /// The `se` field as it appears in the token.
    signed_expiry: String,
    /// The decoded signature bytes.
    signature: Vec<u8>,
}

impl SharedAccessSignature {
    /// Parses `SharedAccessSignature sr=...&sig=...&se=...&skn=...`; the fields may come in
    /// any order and unknown fields are ignored.
    pub fn parse(token: &str) -> Result<Self, MalformedSignature> {
        let fields = token
            .strip_prefix(SAS_PREFIX)
            .ok_or(MalformedSignature::Prefix)?;
        let mut signed_resource = None;
        let mut signature = None;
        let mut signed_expiry = None;
        let mut key_name = None;
        for pair in fields.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "sr" => &mut signed_resource,
                "sig" => &mut signature,
                "se" => &mut signed_expiry,
                "skn" => &mut key_name,
                _ => continue,
            };
            *slot = Some(value.to_owned());
        }
        let signed_resource = signed_resource.ok_or(MalformedSignature::Missing("sr"))?;
        let signature = signature.ok_or(MalformedSignature::Missing("sig"))?;
        let signed_expiry = signed_expiry.ok_or(MalformedSignature::Missing("se"))?;
        let key_name = key_name.ok_or(MalformedSignature::Missing("skn"))?;

        let expires_at = signed_expiry
            .parse::<i64>()
            .ok()
            .and_then(|seconds| OffsetDateTime::from_unix_timestamp(seconds).ok())
            .ok_or(MalformedSignature::Expiry)?;
        let signature = STANDARD
            .decode(url_decode(&signature)?)
            .map_err(|_| MalformedSignature::Signature)?;
        Ok(Self {
            resource: url_decode(&signed_resource)?,
            key_name: url_decode(&key_name)?,
            expires_at,
            signed_resource,
            signed_expiry,
            signature,
        })
    }

    /// Returns whether the signature is the HMAC-SHA256 of the token's `sr` and `se` with
    /// `key`, compared in constant time.
    pub fn is_signed_with(&self, key: &str) -> bool {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes());
        let message = format!("{}\n{}", self.signed_resource, self.signed_expiry);
        hmac::verify(&key, message.as_bytes(), &self.signature).is_ok()
    }
}

// The signature is a credential: debug output shows only what it is valid for.
impl fmt::Debug for SharedAccessSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedAccessSignature")
            .field("resource", &self.resource)
            .field("key_name", &self.key_name)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Why a token is not a well-formed shared access signature.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MalformedSignature {
    #[error("the token does not start with 'SharedAccessSignature '")]
    Prefix,
    #[error("the token has no '{0}' field")]
    Missing(&'static str),
    #[error("the 'se' field is not a Unix time in seconds")]
    Expiry,
    #[error("the 'sig' field is not base64")]
    Signature,
    #[error("a field is not valid URL encoding")]
    Encoding,
}

/// Decodes one URL-encoded field value (`%XX` escapes, `+` as space).
fn url_decode(text: &str) -> Result<String, MalformedSignature> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&format!("v={text}"))
        .map_err(|_| MalformedSignature::Encoding)?;
    match pairs.as_slice() {
        [(_, value)] => Ok(value.clone()),
        _ => Err(MalformedSignature::Encoding),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signs a token the way the SDKs do.
    fn sign(resource: &str, expiry: i64, key_name: &str, key: &str) -> String {
        let encoded: String = serde_urlencoded::to_string([("v", resource)]).unwrap()[2..].into();
        let hmac_key = hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes());
        let signature = hmac::sign(&hmac_key, format!("{encoded}\n{expiry}").as_bytes());
        let signature: String =
            serde_urlencoded::to_string([("v", STANDARD.encode(signature.as_ref()))]).unwrap()[2..]
                .into();
        format!("SharedAccessSignature skn={key_name}&se={expiry}&sig={signature}&sr={encoded}")
    }

    #[test]
    fn token_in_any_field_order_verifies() {
        let rule = AuthorizationRule::root();
        let token = sign(
            "sb://ns.servicebus.windows.net/q1",
            1_900_000_000,
            ROOT_RULE_NAME,
            &rule.secondary_key,
        );
        let parsed = SharedAccessSignature::parse(&token).unwrap();
        assert_eq!(parsed.resource, "sb://ns.servicebus.windows.net/q1");
        assert_eq!(parsed.key_name, ROOT_RULE_NAME);
        assert_eq!(parsed.expires_at.unix_timestamp(), 1_900_000_000);
        assert!(rule.signed(&parsed));
    }

    #[test]
    fn regenerated_key_no_longer_verifies() {
        let mut rule = AuthorizationRule::root();
        let token = sign(
            "sb://ns/q",
            1_900_000_000,
            ROOT_RULE_NAME,
            &rule.primary_key,
        );
        let parsed = SharedAccessSignature::parse(&token).unwrap();
        rule.regenerate(KeyType::Primary, None);
        assert!(!rule.signed(&parsed));
    }

    #[test]
    fn changed_expiry_breaks_signature() {
        let rule = AuthorizationRule::root();
        let token = sign(
            "sb://ns/q",
            1_900_000_000,
            ROOT_RULE_NAME,
            &rule.primary_key,
        );
        let forged = token.replace("se=1900000000", "se=1900000001");
        let parsed = SharedAccessSignature::parse(&forged).unwrap();
        assert!(!rule.signed(&parsed));
    }

    #[test]
    fn malformed_tokens_name_the_fault() {
        assert_eq!(
            SharedAccessSignature::parse("Bearer x").unwrap_err(),
            MalformedSignature::Prefix
        );
        assert_eq!(
            SharedAccessSignature::parse("SharedAccessSignature sr=a&sig=b&se=1").unwrap_err(),
            MalformedSignature::Missing("skn")
        );
        assert_eq!(
            SharedAccessSignature::parse("SharedAccessSignature sr=a&sig=AA%3D%3D&se=x&skn=r")
                .unwrap_err(),
            MalformedSignature::Expiry
        );
    }

    #[test]
    fn generated_keys_are_32_bytes_and_differ() {
        let rule = AuthorizationRule::root();
        assert_eq!(STANDARD.decode(&rule.primary_key).unwrap().len(), 32);
        assert_ne!(rule.primary_key, rule.secondary_key);
        assert!(rule.rights.allow(AccessRight::Send));
        assert!(AccessRights::new([AccessRight::Manage]).allow(AccessRight::Listen));
        assert!(!AccessRights::new([AccessRight::Listen]).allow(AccessRight::Send));
    }

    #[test]
    fn debug_output_hides_keys() {
        let rule = AuthorizationRule::root();
        let text = format!("{rule:?}");
        assert!(!text.contains(&rule.primary_key));
        assert!(!text.contains(&rule.secondary_key));
    }
}
