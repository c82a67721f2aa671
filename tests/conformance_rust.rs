//! Conformance of the fakes with the Rust `azure_identity` crate, unmodified: its client
//! secret and workload identity credentials get tokens from the fake Entra ID over HTTPS, and
//! the tokens verify against the tenant's published JWKS.
//!
//! The crate trusts the fakes' CA through `SSL_CERT_FILE`, which is process-wide, so this file
//! holds one test and runs in its own process.

use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::ClientOptions;
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use serde_json::{Value, json};
use xtenant_fakes::cloud::{ClusterIssuer, ResourceId, lock};
use xtenant_fakes::crypto::PublicKey;
use xtenant_fakes::jwt::{self, DecodedJwt};
use xtenant_fakes::{Fakes, FakesConfig};

const ISSUER: &str = "https://oidc.test/tenant-a/cluster-a/";
const SUBJECT: &str = "system:serviceaccount:default:myserviceaccount";

fn client_options(authority: &str) -> ClientOptions {
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = authority.to_owned();
    ClientOptions {
        cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
        ..Default::default()
    }
}

async fn tenant_keys(http: &reqwest::Client, login: &str, tenant: &str) -> Vec<PublicKey> {
    let url = format!("{login}/{tenant}/discovery/v2.0/keys");
    let jwks: Value = http.get(url).send().await.unwrap().json().await.unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|jwk| PublicKey::from_jwk(jwk).unwrap())
        .collect()
}

#[tokio::test]
async fn azure_identity_credentials_get_verified_tokens() {
    let fakes = Fakes::start(FakesConfig::default()).await.unwrap();
    // SAFETY: this test binary runs this one test, so no other thread reads the environment.
    unsafe { std::env::set_var("SSL_CERT_FILE", fakes.ca_file()) };
    let login = fakes.endpoints.login.clone();
    let (tenant_a, tenant_b, operator_client, operator_secret, identity_client, assertion) = {
        let mut cloud = lock(&fakes.cloud);
        let tenant_a = cloud.tenant("a").unwrap().id.clone();
        let tenant_b = cloud.tenant("b").unwrap().id.clone();
        let operator = cloud.operator(&tenant_a).unwrap().clone();
        let issuer_key = cloud.take_key();
        cloud.issuers.push(ClusterIssuer {
            url: ISSUER.into(),
            tenant: tenant_a.clone(),
            keys: vec![issuer_key.clone()],
            reachable: true,
        });
        let subscription = cloud.subscriptions_of(&tenant_b)[0].resource_id();
        let identity_id = subscription.join(
            "resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1",
        );
        let identity = cloud.create_user_assigned_identity(
            ResourceId::new(identity_id.as_str()),
            &tenant_b,
            "eastus",
        );
        cloud.add_federated_credential(
            &identity.id,
            "fic1",
            ISSUER,
            SUBJECT,
            "api://AzureADTokenExchange",
        );
        let now = cloud.now().unix_timestamp();
        let claims = json!({"aud": ["api://AzureADTokenExchange"], "iss": ISSUER, "sub": SUBJECT, "iat": now, "nbf": now, "exp": now + 3600});
        let assertion = jwt::encode(serde_json::Map::new(), &claims, &issuer_key);
        let secret = operator.secret().unwrap().to_owned();
        (
            tenant_a,
            tenant_b,
            operator.client_id,
            secret,
            identity.client_id,
            assertion,
        )
    };
    let http = reqwest::Client::builder()
        .tls_certs_only([
            reqwest::Certificate::from_pem(&std::fs::read(fakes.ca_file()).unwrap()).unwrap(),
        ])
        .build()
        .unwrap();

    let secret_options = ClientSecretCredentialOptions {
        client_options: client_options(&login),
    };
    let secret_credential = ClientSecretCredential::new(
        tenant_a.as_str(),
        operator_client.to_string(),
        Secret::new(operator_secret),
        Some(secret_options),
    )
    .unwrap();
    let arm_token = secret_credential
        .get_token(&["https://management.core.windows.net//.default"], None)
        .await
        .unwrap();
    let decoded = DecodedJwt::decode(arm_token.token.secret()).unwrap();
    assert_eq!(
        decoded.verify(&tenant_keys(&http, &login, tenant_a.as_str()).await),
        Ok(())
    );
    assert_eq!(
        decoded.claim_str("aud"),
        Some("https://management.core.windows.net/")
    );
    assert_eq!(decoded.claim_str("appid"), Some(operator_client.as_str()));

    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), &assertion).unwrap();
    let workload_options = |tenant: &str| WorkloadIdentityCredentialOptions {
        credential_options: ClientAssertionCredentialOptions {
            client_options: client_options(&login),
        },
        client_id: Some(identity_client.to_string()),
        tenant_id: Some(tenant.to_owned()),
        token_file_path: Some(token_file.path().to_path_buf()),
    };
    let workload =
        WorkloadIdentityCredential::new(Some(workload_options(tenant_b.as_str()))).unwrap();
    let servicebus_token = workload
        .get_token(&["https://servicebus.azure.net/.default"], None)
        .await
        .unwrap();
    let decoded = DecodedJwt::decode(servicebus_token.token.secret()).unwrap();
    assert_eq!(
        decoded.verify(&tenant_keys(&http, &login, tenant_b.as_str()).await),
        Ok(())
    );
    assert_eq!(
        decoded.claim_str("aud"),
        Some("https://servicebus.azure.net")
    );
    assert_eq!(decoded.claim_str("tid"), Some(tenant_b.as_str()));
    assert_eq!(decoded.claim_str("appid"), Some(identity_client.as_str()));

    let wrong_tenant =
        WorkloadIdentityCredential::new(Some(workload_options(tenant_a.as_str()))).unwrap();
    let error = wrong_tenant
        .get_token(&["https://servicebus.azure.net/.default"], None)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("AADSTS700016"), "{error}");
}
