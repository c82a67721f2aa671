//! A cluster's service-account token issuer: the OIDC discovery document and JWKS that
//! kube-apiserver serves and AKS publishes, one issuer per cluster below one base URL.
//!
//! Paths: `{issuer}.well-known/openid-configuration` and `{issuer}openid/v1/jwks`, with the
//! fields and headers kube-apiserver uses (`Cache-Control: public, max-age=3600`, JWKS as
//! `application/jwk-set+json`). An issuer marked unreachable answers 404, as a deleted or
//! private issuer does.

use serde_json::json;
use tracing::debug;
use wiremock::{Request, Respond, ResponseTemplate};

use crate::cloud::{SharedCloud, lock};
use crate::http::normalized_path;

const DISCOVERY_SUFFIX: &str = ".well-known/openid-configuration";
const JWKS_SUFFIX: &str = "openid/v1/jwks";
const CACHE_CONTROL: &str = "public, max-age=3600";

/// The wiremock responder serving every cluster issuer of the model.
pub struct IssuerResponder {
    cloud: SharedCloud,
}

impl IssuerResponder {
    pub fn new(cloud: SharedCloud) -> Self {
        Self { cloud }
    }
}

impl Respond for IssuerResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let path = normalized_path(request);
        let cloud = lock(&self.cloud);
        let found = cloud
            .issuers
            .iter()
            .filter(|i| i.reachable)
            .find_map(|issuer| {
                let issuer_path = issuer_path(&issuer.url)?;
                let rest = path
                    .strip_prefix(issuer_path.trim_end_matches('/'))?
                    .trim_start_matches('/');
                Some((issuer, rest.to_owned()))
            });
        match found {
            Some((issuer, rest))
                if request.method.as_str() == "GET" && rest == DISCOVERY_SUFFIX =>
            {
                ResponseTemplate::new(200)
                    .insert_header("content-type", "application/json")
                    .insert_header("cache-control", CACHE_CONTROL)
                    .set_body_string(
                        json!({
                            "issuer": issuer.url,
                            "jwks_uri": issuer.jwks_uri(),
                            "response_types_supported": ["id_token"],
                            "subject_types_supported": ["public"],
                            "id_token_signing_alg_values_supported": ["RS256"],
                        })
                        .to_string(),
                    )
            }
            Some((issuer, rest)) if request.method.as_str() == "GET" && rest == JWKS_SUFFIX => {
                let keys: Vec<_> = issuer.keys.iter().map(|k| k.jwk()).collect();
                ResponseTemplate::new(200)
                    .insert_header("content-type", "application/jwk-set+json")
                    .insert_header("cache-control", CACHE_CONTROL)
                    .set_body_string(json!({ "keys": keys }).to_string())
            }
            _ => {
                debug!(path = %path, "no issuer document at this path");
                ResponseTemplate::new(404).set_body_string("404 page not found\n")
            }
        }
    }
}

/// The path part of an issuer URL, with its trailing slash.
fn issuer_path(url: &str) -> Option<&str> {
    let without_scheme = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    without_scheme.find('/').map(|i| &without_scheme[i..])
}
