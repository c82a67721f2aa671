//! Projected service account tokens, signed with the cluster issuer's key in the format
//! kube-apiserver uses (`pkg/serviceaccount/claims.go` in kubernetes/kubernetes).
//!
//! The header is `{"alg":"RS256","kid":...}` with no `typ`; `aud` is always a JSON array and
//! `iat` equals `nbf`. Times come from the caller so the model's clock applies.

use serde_json::{Map, json};
use time::{Duration, OffsetDateTime};
use xtenant_fakes::crypto::SigningKey;
use xtenant_fakes::jwt;

/// A Kubernetes object named in the token's private `kubernetes.io` claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The subject and lifetime of a token: the kubelet's TokenRequest for one projected volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// The issuer URL (`--service-account-issuer`), trailing slash included when it has one.
    pub issuer: String,
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
    pub namespace: String,
    pub service_account: ObjectRef,
    pub pod: ObjectRef,
    pub node: ObjectRef,
}

impl TokenRequest {
    /// Returns the token subject, `system:serviceaccount:<namespace>:<name>`.
    pub fn subject(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account.name
        )
    }
}

/// A signed token and its validity window.
#[derive(Clone, PartialEq, Eq)]
pub struct ProjectedToken {
    /// The compact JWT.
    pub jwt: String,
    pub issued_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

impl ProjectedToken {
    /// When the kubelet replaces the token: once 80 % of its lifetime has passed.
    pub fn refresh_at(&self) -> OffsetDateTime {
        let lifetime = self.expires_at - self.issued_at;
        self.issued_at + lifetime * 0.8
    }
}

impl std::fmt::Debug for ProjectedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectedToken")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Signs a token for `request` that is valid from `now` for `request.expiration_seconds`.
pub fn sign(request: &TokenRequest, key: &SigningKey, now: OffsetDateTime) -> ProjectedToken {
    let now = now
        .replace_nanosecond(0)
        .expect("zero nanoseconds is valid");
    let expires_at = now + Duration::seconds(request.expiration_seconds);
    let claims = json!({
        "aud": request.audiences,
        "exp": expires_at.unix_timestamp(),
        "iat": now.unix_timestamp(),
        "iss": request.issuer,
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": {
            "namespace": request.namespace,
            "node": {"name": request.node.name, "uid": request.node.uid},
            "pod": {"name": request.pod.name, "uid": request.pod.uid},
            "serviceaccount": {
                "name": request.service_account.name,
                "uid": request.service_account.uid,
            },
        },
        "nbf": now.unix_timestamp(),
        "sub": request.subject(),
    });
    ProjectedToken {
        jwt: jwt::encode(Map::new(), &claims, key),
        issued_at: now,
        expires_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xtenant_fakes::crypto::pooled_key;
    use xtenant_fakes::jwt::DecodedJwt;

    fn request() -> TokenRequest {
        let object = |name: &str, uid: &str| ObjectRef {
            name: name.into(),
            uid: uid.into(),
        };
        TokenRequest {
            issuer: "https://eastus.oic.prod-aks.azure.com/tenant/cluster/".into(),
            audiences: vec!["api://AzureADTokenExchange".into()],
            expiration_seconds: 3600,
            namespace: "apps".into(),
            service_account: object("producer", "sa-uid"),
            pod: object("job-abcde", "pod-uid"),
            node: object("node-1", "node-uid"),
        }
    }

    #[test]
    fn header_is_alg_and_kid_only() {
        let key = pooled_key(0);
        let token = sign(&request(), &key, OffsetDateTime::now_utc());
        let decoded = DecodedJwt::decode(&token.jwt).unwrap();
        assert_eq!(decoded.header.len(), 2);
        assert_eq!(decoded.header["alg"], "RS256");
        assert_eq!(decoded.kid(), Some(key.kid()));
        assert_eq!(decoded.verify(&[key.verifier()]), Ok(()));
    }

    #[test]
    fn claims_follow_kube_apiserver() {
        let key = pooled_key(0);
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let token = sign(&request(), &key, now);
        let decoded = DecodedJwt::decode(&token.jwt).unwrap();
        let claims = &decoded.claims;
        assert_eq!(claims["aud"], json!(["api://AzureADTokenExchange"]));
        assert_eq!(
            claims["iss"],
            "https://eastus.oic.prod-aks.azure.com/tenant/cluster/"
        );
        assert_eq!(claims["sub"], "system:serviceaccount:apps:producer");
        assert_eq!(claims["iat"], 1_800_000_000);
        assert_eq!(claims["nbf"], 1_800_000_000);
        assert_eq!(claims["exp"], 1_800_003_600);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 36);
        let private = &claims["kubernetes.io"];
        assert_eq!(private["namespace"], "apps");
        assert_eq!(
            private["serviceaccount"],
            json!({"name": "producer", "uid": "sa-uid"})
        );
        assert_eq!(
            private["pod"],
            json!({"name": "job-abcde", "uid": "pod-uid"})
        );
        assert_eq!(
            private["node"],
            json!({"name": "node-1", "uid": "node-uid"})
        );
    }

    #[test]
    fn refresh_at_is_eighty_percent() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let token = sign(&request(), &pooled_key(0), now);
        assert_eq!(token.refresh_at(), now + Duration::seconds(2880));
    }

    #[test]
    fn debug_hides_the_jwt() {
        let token = sign(&request(), &pooled_key(0), OffsetDateTime::now_utc());
        assert!(!format!("{token:?}").contains(&token.jwt));
    }
}
