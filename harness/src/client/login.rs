//! Token requests to Entra ID with the client credentials grant.

use serde::Deserialize;

use super::ClientError;

/// A bearer token and its tenant.
#[derive(Clone)]
pub struct AccessToken {
    pub token: String,
    pub expires_in: i64,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// Requests tokens from `{authority}/{tenant}/oauth2/v2.0/token`.
#[derive(Clone, Debug)]
pub struct TokenClient {
    http: reqwest::Client,
    authority: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: i64,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    error_codes: Vec<u64>,
}

impl TokenClient {
    pub fn new(http: reqwest::Client, authority: &str) -> Self {
        Self {
            http,
            authority: authority.trim_end_matches('/').to_owned(),
        }
    }

    /// Gets a token for `scope` with a client secret, as `az login --service-principal` does.
    pub async fn with_secret(
        &self,
        tenant: &str,
        client_id: &str,
        secret: &str,
        scope: &str,
    ) -> Result<AccessToken, ClientError> {
        self.request(
            tenant,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("scope", scope),
            ],
        )
        .await
    }

    /// Gets a token for `scope` with a federated assertion.
    pub async fn with_assertion(
        &self,
        tenant: &str,
        client_id: &str,
        assertion: &str,
        scope: &str,
    ) -> Result<AccessToken, ClientError> {
        self.request(
            tenant,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
                ("scope", scope),
            ],
        )
        .await
    }

    async fn request(
        &self,
        tenant: &str,
        form: &[(&str, &str)],
    ) -> Result<AccessToken, ClientError> {
        let url = format!("{}/{tenant}/oauth2/v2.0/token", self.authority);
        let transport = |source| ClientError::Transport {
            url: url.clone(),
            source,
        };
        let response = self
            .http
            .post(&url)
            .form(form)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(transport)?;
        if status == 200 {
            let token: TokenResponse =
                serde_json::from_slice(&body).map_err(|e| ClientError::Unexpected {
                    url: url.clone(),
                    problem: format!("token response: {e}"),
                })?;
            return Ok(AccessToken {
                token: token.access_token,
                expires_in: token.expires_in,
            });
        }
        match serde_json::from_slice::<ErrorResponse>(&body) {
            Ok(error) => Err(ClientError::Entra {
                status,
                code: error.error_codes.first().map(|c| format!("AADSTS{c}")),
                error: error.error,
                description: error.error_description,
            }),
            Err(_) => Err(ClientError::Unexpected {
                url,
                problem: format!(
                    "HTTP {status} with a body that is not Entra's error JSON: {}",
                    String::from_utf8_lossy(&body)
                ),
            }),
        }
    }
}
