//! Entra ID token-endpoint errors: AADSTS codes with Entra's JSON error shape.
//!
//! The body carries `error`, `error_description` (starting `AADSTSnnnnn:` and ending with the
//! trace id, correlation id and timestamp), `error_codes`, `timestamp`, `trace_id`,
//! `correlation_id` and `error_uri`, as the Microsoft identity platform returns them.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::format_description;

/// An AADSTS error as the token endpoint returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AadError {
    pub code: u32,
    /// The OAuth 2.0 `error` value.
    pub error: &'static str,
    pub status: u16,
    /// The text after `AADSTSnnnnn: `.
    pub message: String,
}

/// Documentation link that current Entra messages give for federated credentials.
const FEDERATION_DOCS: &str =
    "https://learn.microsoft.com/entra/workload-id/workload-identity-federation";

impl AadError {
    fn new(code: u32, error: &'static str, status: u16, message: String) -> Self {
        Self {
            code,
            error,
            status,
            message,
        }
    }

    /// AADSTS90002: the tenant in the URL does not exist.
    pub fn tenant_not_found(tenant: &str) -> Self {
        Self::new(
            90002,
            "invalid_tenant",
            400,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        )
    }

    /// AADSTS700016: no application with this client id in the tenant, the classic result of
    /// sending a cross-tenant identity's token request to the cluster's tenant.
    pub fn application_not_found(client_id: &str, directory: &str) -> Self {
        Self::new(
            700016,
            "unauthorized_client",
            400,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{directory}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        )
    }

    /// AADSTS7000215: the client secret is wrong.
    pub fn invalid_client_secret(client_id: &str) -> Self {
        Self::new(
            7000215,
            "invalid_client",
            401,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        )
    }

    /// AADSTS900144: a required form field is missing.
    pub fn missing_parameter(name: &str) -> Self {
        Self::new(
            900144,
            "invalid_request",
            400,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    /// AADSTS70003: a grant type other than `client_credentials`.
    pub fn unsupported_grant_type(grant_type: &str) -> Self {
        Self::new(
            70003,
            "unsupported_grant_type",
            400,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        )
    }

    /// AADSTS70011: the scope is not `<resource>/.default`.
    pub fn invalid_scope(scope: &str) -> Self {
        Self::new(
            70011,
            "invalid_scope",
            400,
            format!(
                "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
            ),
        )
    }

    /// AADSTS500011: the scope names a resource that does not exist.
    pub fn resource_not_found(resource: &str, tenant: &str) -> Self {
        Self::new(
            500011,
            "invalid_resource",
            400,
            format!(
                "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        )
    }

    /// AADSTS7000218: neither a secret nor an assertion was sent.
    pub fn missing_credential() -> Self {
        Self::new(7000218, "invalid_client", 401,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".into())
    }

    /// AADSTS700027 with an unsupported `client_assertion_type`.
    pub fn unsupported_assertion_type(assertion_type: &str) -> Self {
        Self::new(
            700027,
            "invalid_client",
            401,
            format!(
                "Client assertion type '{assertion_type}' is not supported. Use 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'."
            ),
        )
    }

    /// AADSTS50027: the assertion is not a well-formed JWT.
    pub fn malformed_assertion() -> Self {
        Self::new(
            50027,
            "invalid_request",
            400,
            "JWT token is invalid or malformed.".into(),
        )
    }

    /// AADSTS700222: an Entra-issued token was presented as a federated assertion.
    pub fn entra_token_as_assertion() -> Self {
        Self::new(
            700222,
            "invalid_client",
            401,
            "AAD-issued tokens may not be used for federated identity flows.".into(),
        )
    }

    /// AADSTS70021: no federated credential is in effect for the identity, as during the
    /// propagation window after a credential is created.
    pub fn no_matching_federated_record(issuer: &str, subject: &str, audience: &str) -> Self {
        Self::new(
            70021,
            "invalid_client",
            401,
            format!(
                "No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: '{audience}'. {FEDERATION_DOCS}"
            ),
        )
    }

    /// AADSTS700211: no federated credential has the assertion's issuer (exact match).
    pub fn issuer_mismatch(issuer: &str) -> Self {
        Self::new(
            700211,
            "invalid_client",
            401,
            format!(
                "No matching federated identity record found for presented assertion issuer '{issuer}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. {FEDERATION_DOCS}"
            ),
        )
    }

    /// AADSTS700212: no federated credential with the assertion's issuer and subject lists
    /// the assertion's audience.
    pub fn audience_mismatch(audience: &str) -> Self {
        Self::new(
            700212,
            "invalid_client",
            401,
            format!(
                "No matching federated identity record found for presented assertion audience '{audience}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. {FEDERATION_DOCS}"
            ),
        )
    }

    /// AADSTS700213: no federated credential with the assertion's issuer has its subject.
    pub fn subject_mismatch(subject: &str) -> Self {
        Self::new(
            700213,
            "invalid_client",
            401,
            format!(
                "No matching federated identity record found for presented assertion subject '{subject}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. {FEDERATION_DOCS}"
            ),
        )
    }

    /// AADSTS7002138: the subject matches a credential only without regard to case.
    pub fn subject_case_mismatch(subject: &str) -> Self {
        Self::new(
            7002138,
            "invalid_client",
            401,
            format!(
                "No matching federated identity record found for presented assertion subject '{subject}'. The subject matches with case-insensitive comparison, but not with case-sensitive comparison. {FEDERATION_DOCS}"
            ),
        )
    }

    /// AADSTS7002137: the issuer matches a credential only without regard to case.
    pub fn issuer_case_mismatch(issuer: &str) -> Self {
        Self::new(
            7002137,
            "invalid_client",
            401,
            format!(
                "No matching federated identity record found for presented assertion issuer '{issuer}'. The issuer matches with case-insensitive comparison, but not with case-sensitive comparison. {FEDERATION_DOCS}"
            ),
        )
    }

    /// AADSTS700024: the assertion is expired or not yet valid.
    pub fn assertion_out_of_time_range(
        now: OffsetDateTime,
        not_before: OffsetDateTime,
        expires: OffsetDateTime,
    ) -> Self {
        Self::new(
            700024,
            "invalid_client",
            401,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://docs.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials .",
                precise_timestamp(now),
                precise_timestamp(not_before),
                precise_timestamp(expires)
            ),
        )
    }

    /// AADSTS90061: Entra could not fetch the issuer's discovery document or JWKS.
    pub fn issuer_metadata_unreachable() -> Self {
        Self::new(
            90061,
            "invalid_request",
            400,
            "Request to External OIDC endpoint failed.".into(),
        )
    }

    /// AADSTS7000272: the assertion's `kid` is not in the issuer's JWKS.
    pub fn signing_key_not_found(kid: &str, issuer: &str) -> Self {
        Self::new(
            7000272,
            "invalid_client",
            401,
            format!(
                "The certificate with identifier {kid} used to sign the federated credential could not be found in the metadata of identity provider {issuer}. Please validate that your Identity Provider's metadata exposes the key used to sign the incoming token."
            ),
        )
    }

    /// AADSTS50013: the assertion's signature does not verify with the key its `kid` names.
    pub fn signature_invalid() -> Self {
        Self::new(
            50013,
            "invalid_client",
            401,
            "Assertion failed signature validation.".into(),
        )
    }

    /// The JSON body Entra returns for this error.
    pub fn body(&self, now: OffsetDateTime, correlation_id: &str) -> Value {
        let trace_id = uuid::Uuid::new_v4().to_string();
        let timestamp = short_timestamp(now);
        let description = format!(
            "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
            self.code, self.message
        );
        json!({
            "error": self.error,
            "error_description": description,
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        })
    }
}

/// `YYYY-MM-DD HH:MM:SSZ`, the timestamp format of Entra error bodies.
fn short_timestamp(at: OffsetDateTime) -> String {
    at.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

/// ISO 8601 with seven fractional digits, as AADSTS700024 prints its times.
fn precise_timestamp(at: OffsetDateTime) -> String {
    let base = at
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]"
        ))
        .unwrap_or_default();
    format!("{base}.{:07}Z", at.nanosecond() / 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_every_field_entra_sends() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let body = AadError::application_not_found("c", "Tenant A").body(now, "corr");
        assert_eq!(body["error"], "unauthorized_client");
        assert_eq!(body["error_codes"][0], 700016);
        assert_eq!(body["timestamp"], "2023-11-14 22:13:20Z");
        assert_eq!(body["correlation_id"], "corr");
        let description = body["error_description"].as_str().unwrap();
        assert!(description.starts_with("AADSTS700016: Application with identifier 'c'"));
        assert!(description.contains(" Trace ID: "));
        assert!(description.ends_with("Timestamp: 2023-11-14 22:13:20Z"));
        assert_eq!(
            body["error_uri"],
            "https://login.microsoftonline.com/error?code=700016"
        );
    }

    #[test]
    fn time_range_error_prints_seven_fractional_digits() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let error = AadError::assertion_out_of_time_range(at, at, at);
        assert!(
            error
                .message
                .contains("Current time: 2023-11-14T22:13:20.0000000Z")
        );
    }
}
