//! Access tokens that Entra ID issues for a resource, and their verification by the
//! resource (ARM, Service Bus).
//!
//! Tokens are v1 JWTs, the format Entra issues for the ARM and Service Bus resources:
//! `iss` is `https://sts.windows.net/{tid}/`, `ver` is `1.0`, and `appid`, `oid`, `sub` and
//! `tid` name the caller (Entra access token claims reference).

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::Cloud;
use super::directory::{Principal, PrincipalKind};
use super::ids::{ClientId, ObjectId, TenantId};
use crate::jwt::{self, DecodedJwt, JwtError};

/// Resources the fake Entra issues tokens for, with the `aud` each token carries.
const KNOWN_RESOURCES: &[(&str, &str)] = &[
    (
        "https://management.core.windows.net",
        "https://management.core.windows.net/",
    ),
    (
        "https://management.azure.com",
        "https://management.azure.com/",
    ),
    (
        "https://servicebus.azure.net",
        "https://servicebus.azure.net",
    ),
];

/// Audiences ARM accepts.
pub const ARM_AUDIENCES: &[&str] = &[
    "https://management.core.windows.net/",
    "https://management.azure.com/",
];
/// Audience Service Bus accepts.
pub const SERVICEBUS_AUDIENCE: &str = "https://servicebus.azure.net";

/// Maps the resource part of a `/.default` scope to the token audience, or `None` when no
/// resource of that name exists. A doubled slash before `.default`, which the Azure CLI and
/// the Python Service Bus client send, names the same resource.
pub fn known_resource(resource: &str) -> Option<&'static str> {
    let trimmed = resource.trim_end_matches('/');
    KNOWN_RESOURCES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(trimmed))
        .map(|(_, audience)| *audience)
}

/// An issued access token and what the token endpoint reports about it.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: i64,
}

/// The claims a resource reads from a verified access token.
#[derive(Clone, Debug)]
pub struct AccessTokenClaims {
    pub audience: String,
    pub tenant: TenantId,
    pub object_id: ObjectId,
    pub app_id: ClientId,
    pub expires_at: OffsetDateTime,
}

/// Why a resource rejected an access token.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenRejection {
    #[error("the access token is malformed: {0}")]
    Malformed(String),
    /// `iss` does not name a tenant of this cloud.
    #[error("the token issuer '{0}' is not a known tenant")]
    UnknownIssuer(String),
    #[error("the token signature is invalid")]
    BadSignature,
    #[error("the token audience '{0}' is not accepted here")]
    WrongAudience(String),
    #[error("the token expired at {expired_at}")]
    Expired {
        expired_at: OffsetDateTime,
        now: OffsetDateTime,
    },
    #[error("the token is not valid before {not_before}")]
    NotYetValid { not_before: OffsetDateTime },
}

/// Lifetime of tokens for managed identities (24 hours, as Entra issues them for federated
/// credentials) and for applications with a secret (1 hour).
const MANAGED_IDENTITY_LIFETIME: i64 = 86_399;
const APPLICATION_LIFETIME: i64 = 3_599;
/// Entra back-dates `iat` and `nbf` by five minutes to absorb clock skew.
const BACKDATE_SECONDS: i64 = 300;

impl Cloud {
    /// Issues a v1 access token for `principal` with audience `audience`.
    /// `credential_type` is `appidacr`: `"1"` for a secret, `"2"` for an assertion.
    pub fn issue_access_token(
        &self,
        principal: &Principal,
        audience: &str,
        credential_type: &str,
    ) -> IssuedToken {
        let tenant = self
            .tenants
            .iter()
            .find(|t| t.id == principal.tenant)
            .expect("a principal's tenant exists");
        let now = self.now().unix_timestamp();
        let expires_in = match principal.kind {
            PrincipalKind::ManagedIdentity { .. } => MANAGED_IDENTITY_LIFETIME,
            PrincipalKind::Application { .. } => APPLICATION_LIFETIME,
        };
        let issuer = format!("https://sts.windows.net/{}/", tenant.id);
        let mut claims = json!({
            "aud": audience,
            "iss": issuer,
            "iat": now - BACKDATE_SECONDS,
            "nbf": now - BACKDATE_SECONDS,
            "exp": now + expires_in,
            "aio": uuid::Uuid::new_v4().simple().to_string(),
            "appid": principal.client_id,
            "appidacr": credential_type,
            "idp": issuer,
            "idtyp": "app",
            "oid": principal.object_id,
            "rh": format!("0.{}.", uuid::Uuid::new_v4().simple()),
            "sub": principal.object_id,
            "tid": tenant.id,
            "uti": uuid::Uuid::new_v4().simple().to_string(),
            "ver": "1.0",
        });
        if let PrincipalKind::ManagedIdentity { resource_id } = &principal.kind {
            claims["xms_mirid"] = Value::from(resource_id.as_str());
        }
        let key = &tenant.signing_key;
        let mut header = Map::new();
        header.insert("typ".into(), Value::from("JWT"));
        header.insert("x5t".into(), Value::from(key.kid()));
        IssuedToken {
            access_token: jwt::encode(header, &claims, key),
            expires_in,
        }
    }

    /// Verifies an access token as a resource does: issuer tenant, signature, audience and
    /// lifetime. The caller compares the tenant with the one the resource belongs to.
    pub fn verify_access_token(
        &self,
        token: &str,
        audiences: &[&str],
    ) -> Result<AccessTokenClaims, TokenRejection> {
        let decoded =
            DecodedJwt::decode(token).map_err(|e| TokenRejection::Malformed(e.to_string()))?;
        let issuer = decoded.claim_str("iss").unwrap_or_default().to_owned();
        let tenant = issuer_tenant(&issuer)
            .and_then(|id| self.tenant(id))
            .ok_or_else(|| TokenRejection::UnknownIssuer(issuer.clone()))?;
        match decoded.verify(&[tenant.signing_key.verifier()]) {
            Ok(()) => {}
            Err(
                JwtError::UnknownKey(_)
                | JwtError::BadSignature
                | JwtError::UnsupportedAlgorithm(_),
            ) => {
                return Err(TokenRejection::BadSignature);
            }
            Err(JwtError::Malformed(reason)) => return Err(TokenRejection::Malformed(reason)),
        }
        let audience = decoded.audiences().into_iter().next().unwrap_or_default();
        let accepted = audiences.iter().any(|a| {
            a.trim_end_matches('/')
                .eq_ignore_ascii_case(audience.trim_end_matches('/'))
        });
        if !accepted {
            return Err(TokenRejection::WrongAudience(audience));
        }
        let now = self.now();
        let expires_at = timestamp(decoded.claim_time("exp").unwrap_or(0));
        if expires_at <= now {
            return Err(TokenRejection::Expired {
                expired_at: expires_at,
                now,
            });
        }
        let not_before = timestamp(decoded.claim_time("nbf").unwrap_or(0));
        if not_before > now {
            return Err(TokenRejection::NotYetValid { not_before });
        }
        Ok(AccessTokenClaims {
            audience,
            tenant: tenant.id.clone(),
            object_id: ObjectId::new(decoded.claim_str("oid").unwrap_or_default()),
            app_id: ClientId::new(
                decoded
                    .claim_str("appid")
                    .or(decoded.claim_str("azp"))
                    .unwrap_or_default(),
            ),
            expires_at,
        })
    }
}

/// The tenant id inside a v1 (`https://sts.windows.net/{tid}/`) or v2
/// (`https://login.microsoftonline.com/{tid}/v2.0`) issuer.
fn issuer_tenant(issuer: &str) -> Option<&str> {
    if let Some(rest) = issuer.strip_prefix("https://sts.windows.net/") {
        return rest.strip_suffix('/');
    }
    issuer
        .strip_prefix("https://login.microsoftonline.com/")?
        .strip_suffix("/v2.0")
}

fn timestamp(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_token_verifies_for_its_audience_only() {
        let cloud = Cloud::with_tenants(&["a"]);
        let tenant = cloud.tenant("a").unwrap().id.clone();
        let operator = cloud.operator(&tenant).unwrap().clone();
        let token = cloud.issue_access_token(&operator, "https://servicebus.azure.net", "1");
        let claims = cloud
            .verify_access_token(&token.access_token, &[SERVICEBUS_AUDIENCE])
            .unwrap();
        assert_eq!(claims.tenant, tenant);
        assert_eq!(claims.object_id, operator.object_id);
        let rejection = cloud
            .verify_access_token(&token.access_token, ARM_AUDIENCES)
            .unwrap_err();
        assert!(matches!(rejection, TokenRejection::WrongAudience(_)));
    }

    #[test]
    fn expired_token_is_rejected_after_clock_moves() {
        let mut cloud = Cloud::with_tenants(&["a"]);
        let tenant = cloud.tenant("a").unwrap().id.clone();
        let operator = cloud.operator(&tenant).unwrap().clone();
        let token =
            cloud.issue_access_token(&operator, "https://management.core.windows.net/", "1");
        cloud.clock.advance(time::Duration::hours(2));
        let rejection = cloud
            .verify_access_token(&token.access_token, ARM_AUDIENCES)
            .unwrap_err();
        assert!(matches!(rejection, TokenRejection::Expired { .. }));
    }

    #[test]
    fn doubled_slash_scope_names_service_bus() {
        assert_eq!(
            known_resource("https://servicebus.azure.net/"),
            Some(SERVICEBUS_AUDIENCE)
        );
        assert_eq!(
            known_resource("https://management.core.windows.net/"),
            Some("https://management.core.windows.net/")
        );
        assert_eq!(known_resource("https://unknown.example"), None);
    }
}
