//! The token endpoint's decisions for `grant_type=client_credentials`: which principal requests a token,
//! whether its credential holds, and for which resource. Pure functions over the model.
//!
//! A federated assertion is checked the way Entra documents it: the assertion's issuer must
//! be one of the identity's federated credentials (exact string match, so a missing trailing
//! slash fails), Entra fetches that issuer's discovery document and JWKS to verify the
//! signature, the assertion must be within its lifetime, and the subject and one audience
//! must equal a credential's, compared case-sensitively.

use time::OffsetDateTime;

use super::errors::AadError;
use crate::cloud::{Cloud, IssuedToken, Principal, PrincipalKind, Tenant, known_resource};
use crate::jwt::{DecodedJwt, JwtError};

/// `client_assertion_type` for a JWT bearer assertion (RFC 7523).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Scopes that MSAL adds to every request; they name no resource and are ignored.
const OIDC_SCOPES: &[&str] = &["openid", "offline_access", "profile", "email"];

/// The form fields of a token request that the fake reads. Others (`client_info`, `claims`)
/// are accepted and ignored, as Entra does for the client credentials grant.
#[derive(Debug, Default)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub scope: Option<String>,
    pub client_secret: Option<String>,
    pub client_assertion: Option<String>,
    pub client_assertion_type: Option<String>,
}

impl TokenRequest {
    /// Reads the fields from `application/x-www-form-urlencoded` pairs.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut request = TokenRequest::default();
        for (name, value) in pairs {
            let slot = match name.as_str() {
                "grant_type" => &mut request.grant_type,
                "client_id" => &mut request.client_id,
                "scope" => &mut request.scope,
                "client_secret" => &mut request.client_secret,
                "client_assertion" => &mut request.client_assertion,
                "client_assertion_type" => &mut request.client_assertion_type,
                _ => continue,
            };
            *slot = Some(value);
        }
        request
    }
}

/// Handles a token request to `/{tenant}/oauth2/v2.0/token`.
pub fn exchange(
    cloud: &Cloud,
    tenant: &str,
    request: &TokenRequest,
) -> Result<IssuedToken, AadError> {
    let tenant = cloud
        .tenant(tenant)
        .ok_or_else(|| AadError::tenant_not_found(tenant))?;
    let grant_type = request
        .grant_type
        .as_deref()
        .ok_or_else(|| AadError::missing_parameter("grant_type"))?;
    if grant_type != "client_credentials" {
        return Err(AadError::unsupported_grant_type(grant_type));
    }
    let scope = request
        .scope
        .as_deref()
        .ok_or_else(|| AadError::missing_parameter("scope"))?;
    let audience = resolve_scope(scope, tenant)?;
    let client_id = request
        .client_id
        .as_deref()
        .ok_or_else(|| AadError::missing_parameter("client_id"))?;
    let principal = cloud
        .principal_by_client_id(&tenant.id, client_id)
        .ok_or_else(|| AadError::application_not_found(client_id, &tenant.display_name))?;

    let credential_type = match (&request.client_secret, &request.client_assertion) {
        (Some(secret), _) => {
            check_secret(principal, secret)?;
            "1"
        }
        (None, Some(assertion)) => {
            let assertion_type = request.client_assertion_type.as_deref().unwrap_or("");
            if assertion_type != JWT_BEARER {
                return Err(AadError::unsupported_assertion_type(assertion_type));
            }
            check_assertion(cloud, principal, assertion)?;
            "2"
        }
        (None, None) => return Err(AadError::missing_credential()),
    };
    Ok(cloud.issue_access_token(principal, audience, credential_type))
}

/// Reads the resource from a `<resource>/.default` scope; MSAL's OIDC scopes may sit beside it.
fn resolve_scope(scope: &str, tenant: &Tenant) -> Result<&'static str, AadError> {
    let mut resources = scope
        .split_whitespace()
        .filter(|s| !OIDC_SCOPES.contains(s));
    let (Some(resource_scope), None) = (resources.next(), resources.next()) else {
        return Err(AadError::invalid_scope(scope));
    };
    let resource = resource_scope
        .strip_suffix("/.default")
        .ok_or_else(|| AadError::invalid_scope(scope))?;
    known_resource(resource)
        .ok_or_else(|| AadError::resource_not_found(resource, &tenant.display_name))
}

fn check_secret(principal: &Principal, secret: &str) -> Result<(), AadError> {
    match principal.secret() {
        Some(expected) if constant_time_eq(expected.as_bytes(), secret.as_bytes()) => Ok(()),
        _ => Err(AadError::invalid_client_secret(
            principal.client_id.as_str(),
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_assertion(cloud: &Cloud, principal: &Principal, assertion: &str) -> Result<(), AadError> {
    let jwt = DecodedJwt::decode(assertion).map_err(|_| AadError::malformed_assertion())?;
    let issuer = jwt.claim_str("iss").unwrap_or_default().to_owned();
    let subject = jwt.claim_str("sub").unwrap_or_default().to_owned();
    let audiences = jwt.audiences();
    if is_entra_issuer(&issuer) {
        return Err(AadError::entra_token_as_assertion());
    }
    let PrincipalKind::ManagedIdentity { resource_id } = &principal.kind else {
        return Err(AadError::no_matching_federated_record(
            &issuer,
            &subject,
            &audiences.join(","),
        ));
    };
    let credentials = cloud.effective_credentials(resource_id);
    if credentials.is_empty() {
        return Err(AadError::no_matching_federated_record(
            &issuer,
            &subject,
            &audiences.join(","),
        ));
    }

    let by_issuer: Vec<_> = credentials.iter().filter(|f| f.issuer == issuer).collect();
    if by_issuer.is_empty() {
        if credentials
            .iter()
            .any(|f| f.issuer.eq_ignore_ascii_case(&issuer))
        {
            return Err(AadError::issuer_case_mismatch(&issuer));
        }
        return Err(AadError::issuer_mismatch(&issuer));
    }

    verify_with_issuer_keys(cloud, &jwt, &issuer)?;
    check_lifetime(cloud.now(), &jwt)?;

    let by_subject: Vec<_> = by_issuer.iter().filter(|f| f.subject == subject).collect();
    if by_subject.is_empty() {
        if by_issuer
            .iter()
            .any(|f| f.subject.eq_ignore_ascii_case(&subject))
        {
            return Err(AadError::subject_case_mismatch(&subject));
        }
        return Err(AadError::subject_mismatch(&subject));
    }
    let audience_matches = by_subject
        .iter()
        .any(|f| f.audiences.iter().any(|a| audiences.contains(a)));
    if !audience_matches {
        return Err(AadError::audience_mismatch(&audiences.join(",")));
    }
    Ok(())
}

/// Verifies the assertion against the keys Entra would fetch from `{issuer}/openid/v1/jwks`
/// after reading the issuer's discovery document.
fn verify_with_issuer_keys(cloud: &Cloud, jwt: &DecodedJwt, issuer: &str) -> Result<(), AadError> {
    let Some(metadata) = cloud.issuer(issuer).filter(|i| i.reachable) else {
        return Err(AadError::issuer_metadata_unreachable());
    };
    let keys: Vec<_> = metadata.keys.iter().map(|k| k.verifier()).collect();
    match jwt.verify(&keys) {
        Ok(()) => Ok(()),
        Err(JwtError::UnknownKey(kid)) => Err(AadError::signing_key_not_found(&kid, issuer)),
        Err(JwtError::Malformed(_)) => Err(AadError::malformed_assertion()),
        Err(JwtError::BadSignature | JwtError::UnsupportedAlgorithm(_)) => {
            Err(AadError::signature_invalid())
        }
    }
}

fn check_lifetime(now: OffsetDateTime, jwt: &DecodedJwt) -> Result<(), AadError> {
    let time = |name| {
        jwt.claim_time(name)
            .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
    };
    let expires = time("exp").unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let not_before = time("nbf")
        .or_else(|| time("iat"))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    if now >= expires || now < not_before {
        return Err(AadError::assertion_out_of_time_range(
            now, not_before, expires,
        ));
    }
    Ok(())
}

fn is_entra_issuer(issuer: &str) -> bool {
    issuer.starts_with("https://sts.windows.net/")
        || issuer.starts_with("https://login.microsoftonline.com/")
}
