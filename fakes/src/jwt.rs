//! Compact JWS (JWT) encoding and decoding with RS256, as Entra ID and kube-apiserver issue them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::crypto::{PublicKey, SigningKey};

/// Failure to decode or verify a compact JWT.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// The token is not three base64url segments holding a JSON header and JSON claims.
    #[error("the token is not a JWT: {0}")]
    Malformed(String),
    /// The header names an algorithm other than RS256.
    #[error("the token is signed with '{0}', expected RS256")]
    UnsupportedAlgorithm(String),
    /// No key in the issuer's key set has the token's `kid`.
    #[error("no key with kid '{0}' in the issuer's key set")]
    UnknownKey(String),
    /// The signature does not verify with the key named by `kid`.
    #[error("the token signature is invalid")]
    BadSignature,
}

/// A decoded but not yet verified JWT.
#[derive(Debug, Clone)]
pub struct DecodedJwt {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

impl DecodedJwt {
    /// Decodes the three segments of a compact JWT without checking the signature.
    pub fn decode(token: &str) -> Result<Self, JwtError> {
        let mut parts = token.trim().split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed(
                "expected three dot-separated segments".into(),
            ));
        };
        let header = decode_json_segment(header, "header")?;
        let claims = decode_json_segment(claims, "claims")?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|e| JwtError::Malformed(format!("signature is not base64url: {e}")))?;
        let signing_input = token
            .trim()
            .rsplit_once('.')
            .map(|(input, _)| input.to_owned())
            .unwrap_or_default();
        Ok(Self {
            header,
            claims,
            signing_input,
            signature,
        })
    }

    /// Returns the `kid` header, if present.
    pub fn kid(&self) -> Option<&str> {
        self.header.get("kid").and_then(Value::as_str)
    }

    /// Returns a string claim.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// Returns a numeric date claim (`exp`, `nbf`, `iat`) in seconds since the Unix epoch.
    pub fn claim_time(&self, name: &str) -> Option<i64> {
        match self.claims.get(name)? {
            Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// Returns the `aud` claim as a list: a single string becomes a list of one.
    pub fn audiences(&self) -> Vec<String> {
        match self.claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Verifies the RS256 signature with the key in `keys` whose `kid` matches the header.
    pub fn verify(&self, keys: &[PublicKey]) -> Result<(), JwtError> {
        let alg = self.header.get("alg").and_then(Value::as_str).unwrap_or("");
        if alg != "RS256" {
            return Err(JwtError::UnsupportedAlgorithm(alg.to_owned()));
        }
        let kid = self.kid().unwrap_or("");
        let key = keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| JwtError::UnknownKey(kid.to_owned()))?;
        if key.verify_rs256(self.signing_input.as_bytes(), &self.signature) {
            Ok(())
        } else {
            Err(JwtError::BadSignature)
        }
    }
}

fn decode_json_segment(segment: &str, what: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|e| JwtError::Malformed(format!("{what} is not base64url: {e}")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(JwtError::Malformed(format!("{what} is not a JSON object"))),
        Err(e) => Err(JwtError::Malformed(format!("{what} is not JSON: {e}"))),
    }
}

/// Encodes and signs a JWT with RS256. `header` gets `alg` and `kid` added.
pub fn encode(mut header: Map<String, Value>, claims: &Value, key: &SigningKey) -> String {
    header.insert("alg".into(), Value::from("RS256"));
    header.insert("kid".into(), Value::from(key.kid()));
    let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("JSON header"));
    let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("JSON claims"));
    let signing_input = format!("{header}.{claims}");
    let signature = URL_SAFE_NO_PAD.encode(key.sign_rs256(signing_input.as_bytes()));
    format!("{signing_input}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::pooled_key;
    use serde_json::json;

    #[test]
    fn encoded_token_verifies_and_decodes() {
        let key = pooled_key(0);
        let token = encode(
            Map::new(),
            &json!({"sub": "s", "aud": ["a"], "exp": 10}),
            &key,
        );
        let decoded = DecodedJwt::decode(&token).unwrap();
        assert_eq!(decoded.verify(&[key.verifier()]), Ok(()));
        assert_eq!(decoded.claim_str("sub"), Some("s"));
        assert_eq!(decoded.audiences(), vec!["a".to_owned()]);
        assert_eq!(decoded.claim_time("exp"), Some(10));
    }

    #[test]
    fn tampered_claims_fail_verification() {
        let key = pooled_key(0);
        let token = encode(Map::new(), &json!({"sub": "s"}), &key);
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"other"}"#);
        parts[1] = &forged;
        let decoded = DecodedJwt::decode(&parts.join(".")).unwrap();
        assert_eq!(
            decoded.verify(&[key.verifier()]),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            DecodedJwt::decode("not-a-token"),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            DecodedJwt::decode("a.b.c"),
            Err(JwtError::Malformed(_))
        ));
    }
}
