//! RSA signing keys for the fakes: made per process with aws-lc-rs, never written to disk.
//!
//! Key generation costs about 0.1 s per RSA-2048 key in an optimised build, so every fake
//! takes its keys from one process-wide pool that generates them in parallel on first use.
//! Keys are shared by the fake clouds of one process (the scenarios of one test run) and
//! never across processes.

use std::sync::{Arc, Mutex, OnceLock};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, KeyPair as _, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// An RSA-2048 key pair that signs with RS256 and publishes itself as a JWK.
pub struct SigningKey {
    pair: KeyPair,
    kid: String,
    modulus: Vec<u8>,
    exponent: Vec<u8>,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a new RSA-2048 key.
    pub fn generate() -> Self {
        let pair = KeyPair::generate(KeySize::Rsa2048).expect("aws-lc-rs generates RSA-2048 keys");
        let public = pair.public_key();
        let components = PublicKeyComponents::<Vec<u8>>::from(public);
        let spki_der = public
            .as_der()
            .expect("an RSA public key encodes as SubjectPublicKeyInfo")
            .as_ref()
            .to_vec();
        let kid = kid_for_spki(&spki_der);
        Self {
            pair,
            kid,
            modulus: strip_leading_zeros(&components.n),
            exponent: strip_leading_zeros(&components.e),
            spki_der,
        }
    }

    /// Key id: base64url (no padding) of the SHA-256 of the DER SubjectPublicKeyInfo, the
    /// algorithm kube-apiserver uses for service-account signing keys.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// DER SubjectPublicKeyInfo of the public key.
    pub fn public_key_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// PKCS#8 DER of the private key, for a kube-apiserver signing key file.
    pub fn private_key_pkcs8_der(&self) -> Vec<u8> {
        self.pair
            .as_der()
            .expect("an RSA key pair encodes as PKCS#8")
            .as_ref()
            .to_vec()
    }

    /// Signs `message` with RSASSA-PKCS1-v1_5 and SHA-256 (JWS `RS256`).
    pub fn sign_rs256(&self, message: &[u8]) -> Vec<u8> {
        let mut signature = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .expect("RS256 signing with a valid key does not fail");
        signature
    }

    /// Public verification key for this key pair.
    pub fn verifier(&self) -> PublicKey {
        PublicKey {
            kid: self.kid.clone(),
            modulus: self.modulus.clone(),
            exponent: self.exponent.clone(),
        }
    }

    /// The public key as a JWK, as Entra ID and kube-apiserver publish it.
    pub fn jwk(&self) -> Value {
        self.verifier().jwk()
    }
}

/// An RSA public key with its key id, as read from a JWKS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: String,
    pub modulus: Vec<u8>,
    pub exponent: Vec<u8>,
}

impl PublicKey {
    /// Verifies an RS256 signature over `message`.
    pub fn verify_rs256(&self, message: &[u8], signature: &[u8]) -> bool {
        let key = RsaPublicKeyComponents {
            n: &self.modulus,
            e: &self.exponent,
        };
        key.verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
            .is_ok()
    }

    /// Reads an RSA key from a JWK, as clients read a JWKS; `None` when `kid`, `n` or `e` is
    /// missing or not base64url.
    pub fn from_jwk(jwk: &Value) -> Option<Self> {
        let decode = |field: &str| URL_SAFE_NO_PAD.decode(jwk[field].as_str()?).ok();
        Some(Self {
            kid: jwk["kid"].as_str()?.to_owned(),
            modulus: decode("n")?,
            exponent: decode("e")?,
        })
    }

    /// The key as a JWK with `use`, `kty`, `kid`, `alg`, `n` and `e`.
    pub fn jwk(&self) -> Value {
        json!({
            "use": "sig",
            "kty": "RSA",
            "kid": self.kid,
            "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(&self.modulus),
            "e": URL_SAFE_NO_PAD.encode(&self.exponent),
        })
    }
}

fn kid_for_spki(spki_der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki_der);
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

fn strip_leading_zeros(bytes: &[u8]) -> Vec<u8> {
    let first = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    bytes[first..].to_vec()
}

/// Process-wide pool of keys, generated on first use and handed out in order.
///
/// Each fake cloud takes keys by index (`key(0)`, `key(1)`, ...), so two clouds started in
/// the same process share keys while each keeps its own tenants and issuers.
pub fn pooled_key(index: usize) -> Arc<SigningKey> {
    static POOL: OnceLock<Mutex<Vec<Arc<SigningKey>>>> = OnceLock::new();
    let pool = POOL.get_or_init(|| Mutex::new(Vec::new()));
    let mut keys = pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if keys.len() <= index {
        let missing = index + 1 - keys.len();
        let fresh = generate_in_parallel(missing.max(PREFETCH));
        keys.extend(fresh);
    }
    keys[index].clone()
}

/// Keys made at once when the pool runs dry: enough for two tenants, a cluster issuer and a spare.
const PREFETCH: usize = 4;

fn generate_in_parallel(count: usize) -> Vec<Arc<SigningKey>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .map(|_| scope.spawn(|| Arc::new(SigningKey::generate())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("key generation thread"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_verifies_with_public_key() {
        let key = pooled_key(0);
        let signature = key.sign_rs256(b"payload");
        assert!(key.verifier().verify_rs256(b"payload", &signature));
        assert!(!key.verifier().verify_rs256(b"tampered", &signature));
    }

    #[test]
    fn jwk_reads_back_into_the_same_key() {
        let key = pooled_key(0);
        assert_eq!(PublicKey::from_jwk(&key.jwk()), Some(key.verifier()));
        assert_eq!(PublicKey::from_jwk(&json!({"kid": "k", "n": "***"})), None);
    }

    #[test]
    fn jwk_exponent_has_no_leading_zeros() {
        let jwk = pooled_key(0).jwk();
        assert_eq!(jwk["e"], "AQAB");
        assert_eq!(jwk["kid"].as_str().unwrap().len(), 43);
    }
}
