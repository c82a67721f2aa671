//! The Microsoft identity platform for every tenant of the model: the v2.0 token endpoint,
//! the tenant's OpenID configuration and JWKS, and instance discovery for MSAL clients.
//!
//! Routes (`{tenant}` is a tenant id, a default domain or a scenario name):
//! - `POST /{tenant}/oauth2/v2.0/token`
//! - `GET /{tenant}/v2.0/.well-known/openid-configuration` and `/{tenant}/.well-known/openid-configuration`
//! - `GET /{tenant}/discovery/v2.0/keys` and `/{tenant}/discovery/keys`
//! - `GET /common/discovery/instance`

pub mod errors;
pub mod exchange;

use std::sync::Arc;

use serde_json::{Value, json};
use tracing::{debug, debug_span};
use wiremock::{Request, Respond, ResponseTemplate};

use crate::cloud::{SharedCloud, lock};
use crate::http::{header, normalized_path, query};
use crate::server::Endpoints;
pub use errors::AadError;
pub use exchange::{JWT_BEARER, TokenRequest};

/// Authorities that stand for any tenant; they have discovery documents but no keys of
/// their own.
const MULTI_TENANT_AUTHORITIES: &[&str] = &["common", "organizations"];

/// The wiremock responder that serves Entra ID from the model.
pub struct EntraResponder {
    cloud: SharedCloud,
    endpoints: Arc<Endpoints>,
}

impl EntraResponder {
    pub fn new(cloud: SharedCloud, endpoints: Arc<Endpoints>) -> Self {
        Self { cloud, endpoints }
    }

    fn token(&self, tenant: &str, request: &Request) -> ResponseTemplate {
        let correlation_id = header(request, "client-request-id")
            .or_else(|| header(request, "x-ms-client-request-id"))
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let pairs: Vec<(String, String)> = match serde_urlencoded::from_bytes(&request.body) {
            Ok(pairs) => pairs,
            Err(_) => {
                let error = AadError::missing_parameter("grant_type");
                return self.error(&error, &correlation_id);
            }
        };
        let token_request = TokenRequest::from_pairs(pairs);
        let cloud = lock(&self.cloud);
        let client_id = token_request.client_id.as_deref().unwrap_or("");
        match exchange::exchange(&cloud, tenant, &token_request) {
            Ok(issued) => {
                debug!(tenant, client_id, "issued an access token");
                ResponseTemplate::new(200).set_body_json(json!({
                    "token_type": "Bearer",
                    "expires_in": issued.expires_in,
                    "ext_expires_in": issued.expires_in,
                    "access_token": issued.access_token,
                }))
            }
            Err(error) => {
                debug!(
                    tenant,
                    client_id,
                    code = error.code,
                    error = error.error,
                    "rejected a token request"
                );
                let body = error.body(cloud.now(), &correlation_id);
                ResponseTemplate::new(error.status).set_body_json(body)
            }
        }
    }

    fn error(&self, error: &AadError, correlation_id: &str) -> ResponseTemplate {
        let now = lock(&self.cloud).now();
        ResponseTemplate::new(error.status).set_body_json(error.body(now, correlation_id))
    }

    /// Serves the tenant's OpenID Connect discovery document; `v2` selects the v2.0 endpoints.
    fn openid_configuration(&self, tenant: &str, v2: bool) -> ResponseTemplate {
        if v2 && MULTI_TENANT_AUTHORITIES.contains(&tenant) {
            return self.multi_tenant_configuration(tenant);
        }
        let cloud = lock(&self.cloud);
        let Some(tenant) = cloud.tenant(tenant) else {
            let error = AadError::tenant_not_found(tenant);
            return ResponseTemplate::new(error.status)
                .set_body_json(error.body(cloud.now(), &uuid::Uuid::new_v4().to_string()));
        };
        let base = format!("{}/{}", self.endpoints.login, tenant.id);
        let document = if v2 {
            json!({
                "token_endpoint": format!("{base}/oauth2/v2.0/token"),
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                "jwks_uri": format!("{base}/discovery/v2.0/keys"),
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": format!("{base}/v2.0"),
                "request_uri_parameter_supported": false,
                "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
                "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
                "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
                "http_logout_supported": true,
                "frontchannel_logout_supported": true,
                "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid"],
                "kerberos_endpoint": format!("{base}/kerberos"),
                "tenant_region_scope": "NA",
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
            })
        } else {
            json!({
                "token_endpoint": format!("{base}/oauth2/token"),
                "jwks_uri": format!("{base}/discovery/keys"),
                "issuer": format!("https://sts.windows.net/{}/", tenant.id),
                "authorization_endpoint": format!("{base}/oauth2/authorize"),
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
            })
        };
        ResponseTemplate::new(200).set_body_json(document)
    }

    /// Serves the discovery document of a multi-tenant authority (`common`, `organizations`),
    /// whose issuer has the `{tenantid}` placeholder. MSAL reads it on `az logout`.
    fn multi_tenant_configuration(&self, authority: &str) -> ResponseTemplate {
        let base = format!("{}/{authority}", self.endpoints.login);
        ResponseTemplate::new(200).set_body_json(json!({
            "token_endpoint": format!("{base}/oauth2/v2.0/token"),
            "jwks_uri": format!("{base}/discovery/v2.0/keys"),
            "issuer": format!("{}/{{tenantid}}/v2.0", self.endpoints.login),
            "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
            "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": null,
            "cloud_instance_name": "microsoftonline.com",
        }))
    }

    fn keys(&self, tenant: &str) -> ResponseTemplate {
        let cloud = lock(&self.cloud);
        match cloud.tenant(tenant) {
            Some(tenant) => {
                let mut jwk = tenant.signing_key.jwk();
                jwk["x5t"] = Value::from(tenant.signing_key.kid());
                jwk["issuer"] = Value::from(format!("{}/{}/v2.0", self.endpoints.login, tenant.id));
                ResponseTemplate::new(200).set_body_json(json!({ "keys": [jwk] }))
            }
            None => {
                let error = AadError::tenant_not_found(tenant);
                ResponseTemplate::new(error.status)
                    .set_body_json(error.body(cloud.now(), &uuid::Uuid::new_v4().to_string()))
            }
        }
    }

    /// Instance discovery, which MSAL calls unless it is turned off. The fake vouches only for
    /// its own host.
    fn instance_discovery(&self, request: &Request) -> ResponseTemplate {
        let host = self
            .endpoints
            .login
            .trim_start_matches("https://")
            .to_owned();
        let endpoint = query(request)
            .get("authorization_endpoint")
            .cloned()
            .unwrap_or_default();
        let tenant = endpoint
            .trim_start_matches("https://")
            .split('/')
            .nth(1)
            .unwrap_or("common")
            .to_owned();
        if !endpoint.is_empty() && !endpoint.starts_with(&self.endpoints.login) {
            return ResponseTemplate::new(400).set_body_json(json!({
                "error": "invalid_instance",
                "error_description": format!("AADSTS50049: Unknown or invalid instance. Only {host} is served here."),
                "error_codes": [50049],
            }));
        }
        ResponseTemplate::new(200).set_body_json(json!({
            "tenant_discovery_endpoint": format!("{}/{tenant}/v2.0/.well-known/openid-configuration", self.endpoints.login),
            "api-version": "1.1",
            "metadata": [{ "preferred_network": host, "preferred_cache": host, "aliases": [host] }],
        }))
    }
}

impl Respond for EntraResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let path = normalized_path(request);
        let method = request.method.as_str();
        let _span = debug_span!("entra", method, path = %path).entered();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            ("POST", [tenant, "oauth2", "v2.0", "token"]) => self.token(tenant, request),
            ("GET", [tenant, "v2.0", ".well-known", "openid-configuration"]) => {
                self.openid_configuration(tenant, true)
            }
            ("GET", [tenant, ".well-known", "openid-configuration"]) => {
                self.openid_configuration(tenant, false)
            }
            ("GET", [tenant, "discovery", "v2.0", "keys"] | [tenant, "discovery", "keys"]) => {
                self.keys(tenant)
            }
            ("GET", ["common", "discovery", "instance"]) => self.instance_discovery(request),
            _ => {
                debug!("no Entra route for the request");
                ResponseTemplate::new(404).set_body_json(json!({
                    "error": "not_found",
                    "error_description": format!("No Microsoft identity platform endpoint at {method} {path}."),
                }))
            }
        }
    }
}
