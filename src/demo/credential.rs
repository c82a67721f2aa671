//! Sources of the token the demo authorizes the queue with: the workload identity
//! credential (the sample's behaviour), a credential that keeps the first assertion it read
//! (as `azure_identity` 0.20 did), or a shared access signature from a connection string.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use azure_core::credentials::{AccessToken, TokenCredential};
use azure_core::http::ClientMethodOptions;
use azure_identity::{ClientAssertion, ClientAssertionCredential, WorkloadIdentityCredential};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use time::OffsetDateTime;

/// Scope of the Service Bus token, as the Rust and .NET SDKs request it.
const SERVICEBUS_SCOPE: &str = "https://servicebus.azure.net/.default";
/// `$cbs` token type of an Entra access token.
pub const TOKEN_TYPE_JWT: &str = "jwt";
/// `$cbs` token type of a shared access signature.
pub const TOKEN_TYPE_SAS: &str = "servicebus.windows.net:sastoken";
/// Lifetime the demo gives a shared access signature.
const SAS_LIFETIME: time::Duration = time::Duration::hours(1);
/// How long the read-once mode waits for the kubelet to rotate the token file.
const ROTATION_WAIT: Duration = Duration::from_secs(60);
const ROTATION_POLL: Duration = Duration::from_millis(20);

/// A token for the `$cbs` put-token.
pub struct CbsToken {
    pub token_type: &'static str,
    pub token: String,
    pub expires_on: OffsetDateTime,
}

/// Gets an Entra token for Service Bus with `WorkloadIdentityCredential`, which reads
/// `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and `AZURE_FEDERATED_TOKEN_FILE`.
pub async fn workload_identity_token() -> Result<CbsToken> {
    let credential = WorkloadIdentityCredential::new(None)
        .context("creating the workload identity credential failed")?;
    let token = credential
        .get_token(&[SERVICEBUS_SCOPE], None)
        .await
        .context("getting a Service Bus token with the workload identity credential failed")?;
    Ok(jwt(token))
}

fn jwt(token: AccessToken) -> CbsToken {
    CbsToken {
        token_type: TOKEN_TYPE_JWT,
        token: token.token.secret().to_owned(),
        expires_on: token.expires_on,
    }
}

/// An assertion read once and returned on every call, as a client that caches the token
/// file's contents does.
#[derive(Debug)]
struct KeptAssertion(String);

#[async_trait::async_trait]
impl ClientAssertion for KeptAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        Ok(self.0.clone())
    }
}

/// Reads the federated token file, gets a token with it, waits until the kubelet rotates
/// the file, then requests a new token: with the assertion it kept when `keep_assertion`,
/// else with the rotated file's contents. With the kept assertion the second request fails
/// once that assertion has expired, which is what a client that caches the file meets when
/// its access token runs out; a client that reads the file again keeps working.
pub async fn token_after_rotation(keep_assertion: bool) -> Result<CbsToken> {
    let variable = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .with_context(|| format!("environment variable {name} is missing or empty"))
    };
    let tenant = variable("AZURE_TENANT_ID")?;
    let client = variable("AZURE_CLIENT_ID")?;
    let path = variable("AZURE_FEDERATED_TOKEN_FILE")?;
    let assertion = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the federated token file {path} failed"))?;
    println!("Read the federated token file");
    let first = kept_assertion_token(&tenant, &client, &assertion).await?;
    println!("Got a Service Bus token with the assertion read from the file");

    let waited = tokio::time::timeout(ROTATION_WAIT, async {
        loop {
            match std::fs::read_to_string(&path) {
                Ok(current) if current != assertion => break,
                _ => tokio::time::sleep(ROTATION_POLL).await,
            }
        }
    })
    .await;
    if waited.is_err() {
        bail!("the token file was not rotated within {ROTATION_WAIT:?}");
    }
    drop(first);
    if keep_assertion {
        println!(
            "The kubelet rotated the token file; requesting a new token with the kept assertion"
        );
        return kept_assertion_token(&tenant, &client, &assertion).await;
    }
    let rotated = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the federated token file {path} failed"))?;
    println!("The kubelet rotated the token file; requesting a new token with the rotated file");
    kept_assertion_token(&tenant, &client, &rotated).await
}

async fn kept_assertion_token(tenant: &str, client: &str, assertion: &str) -> Result<CbsToken> {
    let credential: Arc<ClientAssertionCredential<KeptAssertion>> = ClientAssertionCredential::new(
        tenant.to_owned(),
        client.to_owned(),
        KeptAssertion(assertion.to_owned()),
        None,
    )
    .context("creating the client assertion credential failed")?;
    let token = credential
        .get_token(&[SERVICEBUS_SCOPE], None)
        .await
        .context("getting a Service Bus token with the kept assertion failed")?;
    Ok(jwt(token))
}

/// The parts of a Service Bus connection string the demo uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionString {
    pub key_name: String,
    pub key: String,
}

impl ConnectionString {
    /// Parses `Endpoint=sb://...;SharedAccessKeyName=NAME;SharedAccessKey=KEY`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut key_name = None;
        let mut key = None;
        for part in text.split(';').filter(|p| !p.trim().is_empty()) {
            let (name, value) = part
                .split_once('=')
                .with_context(|| format!("connection string part '{part}' has no '='"))?;
            match name.trim() {
                "SharedAccessKeyName" => key_name = Some(value.to_owned()),
                "SharedAccessKey" => key = Some(value.to_owned()),
                _ => {}
            }
        }
        Ok(Self {
            key_name: key_name.context("the connection string has no SharedAccessKeyName")?,
            key: key.context("the connection string has no SharedAccessKey")?,
        })
    }

    /// Signs a shared access signature for `resource` (such as `sb://ns.servicebus.windows.net/q`):
    /// HMAC-SHA256 with the key over the URL-encoded resource, a newline and the expiry.
    pub fn sas_token(&self, resource: &str, now: OffsetDateTime) -> CbsToken {
        let expires_on = now + SAS_LIFETIME;
        let expiry = expires_on.unix_timestamp();
        let encoded = url_encode(resource);
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, self.key.as_bytes());
        let signature = aws_lc_rs::hmac::sign(&key, format!("{encoded}\n{expiry}").as_bytes());
        let token = format!(
            "SharedAccessSignature sr={encoded}&sig={}&se={expiry}&skn={}",
            url_encode(&STANDARD.encode(signature.as_ref())),
            url_encode(&self.key_name)
        );
        CbsToken {
            token_type: TOKEN_TYPE_SAS,
            token,
            expires_on,
        }
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_string_names_key_and_value() {
        let parsed = ConnectionString::parse(
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=abc=",
        )
        .unwrap();
        assert_eq!(parsed.key_name, "RootManageSharedAccessKey");
        assert_eq!(parsed.key, "abc=");
        assert!(ConnectionString::parse("Endpoint=sb://x/").is_err());
    }

    #[test]
    fn sas_token_has_every_field() {
        let parsed = ConnectionString {
            key_name: "k".into(),
            key: "secret".into(),
        };
        let token = parsed.sas_token("sb://ns/q", OffsetDateTime::UNIX_EPOCH);
        assert!(
            token
                .token
                .starts_with("SharedAccessSignature sr=sb%3A%2F%2Fns%2Fq&sig="),
            "{}",
            token.token
        );
        assert!(token.token.ends_with("&se=3600&skn=k"), "{}", token.token);
        assert_eq!(token.token_type, TOKEN_TYPE_SAS);
    }
}
