//! The fake Entra ID token endpoint over HTTP: issued tokens and one row per AADSTS error.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use time::Duration;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer};
use xtenant_fakes::Endpoints;
use xtenant_fakes::cloud::{
    ClientId, Cloud, ClusterIssuer, FederatedCredential, ObjectId, Principal, PrincipalKind,
    ResourceId, SharedCloud, UserAssignedIdentity, lock,
};
use xtenant_fakes::crypto::PublicKey;
use xtenant_fakes::entra::{EntraResponder, JWT_BEARER};
use xtenant_fakes::jwt::{self, DecodedJwt};

const ISSUER: &str = "https://issuer.test/tenant-a/cluster/";
const SUBJECT: &str = "system:serviceaccount:default:myserviceaccount";
const AUDIENCE: &str = "api://AzureADTokenExchange";
const SERVICEBUS_SCOPE: &str = "https://servicebus.azure.net//.default";

/// A cloud with tenants `a` and `b`, a cluster issuer in `a`, and an identity in `b` that
/// trusts the issuer for `SUBJECT`.
struct World {
    cloud: SharedCloud,
    server: MockServer,
    http: reqwest::Client,
    tenant_a: String,
    tenant_b: String,
    identity_client_id: String,
    issuer_key: Arc<xtenant_fakes::crypto::SigningKey>,
}

impl World {
    async fn new() -> Self {
        let mut cloud = Cloud::with_tenants(&["a", "b"]);
        let tenant_a = cloud.tenant("a").unwrap().id.clone();
        let tenant_b = cloud.tenant("b").unwrap().id.clone();
        let issuer_key = cloud.take_key();
        cloud.issuers.push(ClusterIssuer {
            url: ISSUER.into(),
            tenant: tenant_a.clone(),
            keys: vec![issuer_key.clone()],
            reachable: true,
        });
        let identity_id = ResourceId::new(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1",
        );
        let client_id = ClientId::random();
        let object_id = ObjectId::random();
        let now = cloud.now();
        cloud.principals.push(Principal {
            object_id: object_id.clone(),
            client_id: client_id.clone(),
            tenant: tenant_b.clone(),
            display_name: "id1".into(),
            kind: PrincipalKind::ManagedIdentity {
                resource_id: identity_id.clone(),
            },
            created_at: now,
        });
        cloud.identities.insert(
            identity_id.key(),
            UserAssignedIdentity {
                id: identity_id.clone(),
                tenant: tenant_b.clone(),
                location: "eastus".into(),
                tags: Value::Null,
                principal_id: object_id,
                client_id: client_id.clone(),
                created_at: now,
            },
        );
        let fic_id = identity_id.join("federatedIdentityCredentials/fic1");
        cloud.federated_credentials.insert(
            fic_id.key(),
            FederatedCredential {
                id: fic_id,
                identity: identity_id,
                issuer: ISSUER.into(),
                subject: SUBJECT.into(),
                audiences: vec![AUDIENCE.into()],
                created_at: now - Duration::minutes(1),
            },
        );
        let cloud: SharedCloud = Arc::new(Mutex::new(cloud));
        let server = MockServer::builder().start().await;
        let endpoints = Arc::new(Endpoints {
            arm: "https://127.0.0.1:1".into(),
            login: server.uri(),
            issuer: "https://127.0.0.1:2".into(),
            servicebus_tls: "127.0.0.1:3".parse().unwrap(),
            servicebus_plain: "127.0.0.1:4".parse().unwrap(),
        });
        Mock::given(any())
            .respond_with(EntraResponder::new(cloud.clone(), endpoints))
            .mount(&server)
            .await;
        Self {
            cloud,
            server,
            http: reqwest::Client::new(),
            tenant_a: tenant_a.to_string(),
            tenant_b: tenant_b.to_string(),
            identity_client_id: client_id.to_string(),
            issuer_key,
        }
    }

    /// A projected service-account token as kube-apiserver signs it.
    fn assertion(&self, issuer: &str, subject: &str, audience: &str, lifetime: i64) -> String {
        let now = lock(&self.cloud).now().unix_timestamp();
        let claims = serde_json::json!({
            "aud": [audience], "iss": issuer, "sub": subject,
            "iat": now, "nbf": now, "exp": now + lifetime,
        });
        jwt::encode(serde_json::Map::new(), &claims, &self.issuer_key)
    }

    async fn request(&self, tenant: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let url = format!("{}/{tenant}/oauth2/v2.0/token", self.server.uri());
        let response = self.http.post(url).form(form).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn exchange(&self, tenant: &str, client_id: &str, assertion: &str) -> (u16, Value) {
        self.request(
            tenant,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", assertion),
                ("scope", SERVICEBUS_SCOPE),
            ],
        )
        .await
    }

    fn operator(&self, tenant: &str) -> (String, String) {
        let cloud = lock(&self.cloud);
        let tenant = cloud.tenant(tenant).unwrap().id.clone();
        let operator = cloud.operator(&tenant).unwrap();
        (
            operator.client_id.to_string(),
            operator.secret().unwrap().to_owned(),
        )
    }

    async fn tenant_keys(&self, tenant: &str) -> Vec<PublicKey> {
        let url = format!("{}/{tenant}/discovery/v2.0/keys", self.server.uri());
        let jwks: Value = self
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|jwk| PublicKey::from_jwk(jwk).unwrap())
            .collect()
    }
}

#[tokio::test]
async fn federated_token_verifies_with_tenant_jwks() {
    let world = World::new().await;
    let assertion = world.assertion(ISSUER, SUBJECT, AUDIENCE, 3600);
    let (status, body) = world
        .exchange(&world.tenant_b, &world.identity_client_id, &assertion)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["expires_in"].is_number());
    assert_eq!(body["token_type"], "Bearer");

    let token = DecodedJwt::decode(body["access_token"].as_str().unwrap()).unwrap();
    let keys = world.tenant_keys(&world.tenant_b).await;
    assert_eq!(token.verify(&keys), Ok(()));
    assert_eq!(token.claim_str("aud"), Some("https://servicebus.azure.net"));
    assert_eq!(token.claim_str("tid"), Some(world.tenant_b.as_str()));
    assert_eq!(
        token.claim_str("appid"),
        Some(world.identity_client_id.as_str())
    );
    assert_eq!(
        token.claim_str("iss").unwrap(),
        format!("https://sts.windows.net/{}/", world.tenant_b)
    );
    assert_eq!(token.claim_str("ver"), Some("1.0"));
    for claim in ["oid", "sub", "iat", "nbf", "exp"] {
        assert!(token.claims.contains_key(claim), "missing claim {claim}");
    }
    let other_keys = world.tenant_keys(&world.tenant_a).await;
    assert!(token.verify(&other_keys).is_err());
}

#[tokio::test]
async fn operator_secret_gets_arm_token_with_msal_extras() {
    let world = World::new().await;
    let (client_id, secret) = world.operator("a");
    let (status, body) = world
        .request(
            &world.tenant_a,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
                ("client_secret", &secret),
                ("client_info", "1"),
                (
                    "claims",
                    r#"{"access_token": {"xms_cc": {"values": ["CP1"]}}}"#,
                ),
                (
                    "scope",
                    "https://management.core.windows.net//.default offline_access openid profile",
                ),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = DecodedJwt::decode(body["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(
        token.claim_str("aud"),
        Some("https://management.core.windows.net/")
    );
}

/// A case name, the tenant in the URL, the form, then the expected status, `error` and code.
type ErrorRow = (
    &'static str,
    String,
    Vec<(String, String)>,
    u16,
    &'static str,
    u32,
);

/// One row per rejection: how to provoke it, then the expected status, `error` and code.
#[tokio::test]
async fn token_endpoint_error_table() {
    let world = World::new().await;
    let good = world.assertion(ISSUER, SUBJECT, AUDIENCE, 3600);
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let claims = DecodedJwt::decode(&good).unwrap().claims;
        let mut forged = claims.clone();
        forged.insert(
            "sub".into(),
            Value::from("system:serviceaccount:default:attacker"),
        );
        use base64::Engine;
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&forged).unwrap());
        parts.join(".")
    };
    let (operator_client, _) = world.operator("a");
    let id = world.identity_client_id.clone();
    let b = world.tenant_b.clone();
    let a = world.tenant_a.clone();
    let secret_form = |client: &str, secret: &str| -> Vec<(String, String)> {
        vec![
            ("grant_type".into(), "client_credentials".into()),
            ("client_id".into(), client.into()),
            ("client_secret".into(), secret.into()),
            (
                "scope".into(),
                "https://management.core.windows.net//.default".into(),
            ),
        ]
    };
    let assertion_form = |assertion: &str| -> Vec<(String, String)> {
        vec![
            ("grant_type".into(), "client_credentials".into()),
            ("client_id".into(), id.clone()),
            ("client_assertion_type".into(), JWT_BEARER.into()),
            ("client_assertion".into(), assertion.into()),
            ("scope".into(), SERVICEBUS_SCOPE.into()),
        ]
    };
    let rows: Vec<ErrorRow> = vec![
        (
            "unknown tenant",
            "00000000-0000-0000-0000-000000000000".into(),
            assertion_form(&good),
            400,
            "invalid_tenant",
            90002,
        ),
        (
            "identity asked in the cluster's tenant",
            a.clone(),
            assertion_form(&good),
            400,
            "unauthorized_client",
            700016,
        ),
        (
            "wrong secret",
            a.clone(),
            secret_form(&operator_client, "wrong"),
            401,
            "invalid_client",
            7000215,
        ),
        (
            "issuer without trailing slash",
            b.clone(),
            assertion_form(&world.assertion(ISSUER.trim_end_matches('/'), SUBJECT, AUDIENCE, 3600)),
            401,
            "invalid_client",
            700211,
        ),
        (
            "issuer differs in case",
            b.clone(),
            assertion_form(&world.assertion(
                &ISSUER.to_uppercase().replace("HTTPS", "https"),
                SUBJECT,
                AUDIENCE,
                3600,
            )),
            401,
            "invalid_client",
            7002137,
        ),
        (
            "another subject",
            b.clone(),
            assertion_form(&world.assertion(
                ISSUER,
                "system:serviceaccount:default:other",
                AUDIENCE,
                3600,
            )),
            401,
            "invalid_client",
            700213,
        ),
        (
            "subject differs in case",
            b.clone(),
            assertion_form(&world.assertion(ISSUER, &SUBJECT.to_uppercase(), AUDIENCE, 3600)),
            401,
            "invalid_client",
            7002138,
        ),
        (
            "another audience",
            b.clone(),
            assertion_form(&world.assertion(
                ISSUER,
                SUBJECT,
                "api://AzureADTokenExchangeChina",
                3600,
            )),
            401,
            "invalid_client",
            700212,
        ),
        (
            "expired assertion",
            b.clone(),
            assertion_form(&world.assertion(ISSUER, SUBJECT, AUDIENCE, -60)),
            401,
            "invalid_client",
            700024,
        ),
        (
            "tampered assertion",
            b.clone(),
            assertion_form(&tampered),
            401,
            "invalid_client",
            50013,
        ),
        (
            "not a JWT",
            b.clone(),
            assertion_form("not-a-jwt"),
            400,
            "invalid_request",
            50027,
        ),
        (
            "unknown resource",
            b.clone(),
            {
                let mut form = assertion_form(&good);
                form[4].1 = "https://unknown.example/.default".into();
                form
            },
            400,
            "invalid_resource",
            500011,
        ),
        (
            "scope without .default",
            b.clone(),
            {
                let mut form = assertion_form(&good);
                form[4].1 = "https://servicebus.azure.net/user_impersonation".into();
                form
            },
            400,
            "invalid_scope",
            70011,
        ),
        (
            "missing grant type",
            b.clone(),
            assertion_form(&good)[1..].to_vec(),
            400,
            "invalid_request",
            900144,
        ),
    ];
    for (case, tenant, form, status, error, code) in rows {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (actual_status, body) = world.request(&tenant, &form).await;
        assert_eq!(actual_status, status, "{case}: {body}");
        assert_eq!(body["error"], error, "{case}: {body}");
        assert_eq!(body["error_codes"][0], code, "{case}: {body}");
        let description = body["error_description"].as_str().unwrap();
        assert!(
            description.starts_with(&format!("AADSTS{code}: ")),
            "{case}: {description}"
        );
        assert!(
            description.contains(" Trace ID: ") && description.contains(" Correlation ID: "),
            "{case}: {description}"
        );
        for field in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
            assert!(body[field].is_string(), "{case}: missing {field}");
        }
    }
}

#[tokio::test]
async fn issuer_that_cannot_be_fetched_fails_with_oidc_error() {
    let world = World::new().await;
    lock(&world.cloud).issuer_mut(ISSUER).unwrap().reachable = false;
    let (status, body) = world
        .exchange(
            &world.tenant_b,
            &world.identity_client_id,
            &world.assertion(ISSUER, SUBJECT, AUDIENCE, 3600),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error_codes"][0], 90061);
}

#[tokio::test]
async fn rotated_key_no_longer_verifies_old_assertions() {
    let world = World::new().await;
    let old = world.assertion(ISSUER, SUBJECT, AUDIENCE, 3600);
    {
        let mut cloud = lock(&world.cloud);
        let key = cloud.take_key();
        cloud.issuer_mut(ISSUER).unwrap().keys = vec![key];
    }
    let (status, body) = world
        .exchange(&world.tenant_b, &world.identity_client_id, &old)
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error_codes"][0], 7000272);
}

#[tokio::test]
async fn new_credential_matches_only_after_propagation() {
    let world = World::new().await;
    let assertion = world.assertion(ISSUER, SUBJECT, AUDIENCE, 3600);
    lock(&world.cloud).delays.fic_propagation = Duration::minutes(5);
    let (status, body) = world
        .exchange(&world.tenant_b, &world.identity_client_id, &assertion)
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error_codes"][0], 70021);
    lock(&world.cloud).clock.advance(Duration::minutes(5));
    let fresh = world.assertion(ISSUER, SUBJECT, AUDIENCE, 3600);
    let (status, body) = world
        .exchange(&world.tenant_b, &world.identity_client_id, &fresh)
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn tenant_discovery_names_token_endpoint() {
    let world = World::new().await;
    let url = format!(
        "{}/{}/v2.0/.well-known/openid-configuration",
        world.server.uri(),
        world.tenant_a
    );
    let document: Value = world
        .http
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        document["token_endpoint"],
        format!(
            "{}/{}/oauth2/v2.0/token",
            world.server.uri(),
            world.tenant_a
        )
    );
    assert!(document["authorization_endpoint"].is_string());
    let unknown = format!(
        "{}/nope/v2.0/.well-known/openid-configuration",
        world.server.uri()
    );
    let response = world.http.get(unknown).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
}

#[tokio::test]
async fn multi_tenant_discovery_has_placeholder_issuer() {
    let world = World::new().await;
    for authority in ["common", "organizations"] {
        let url = format!(
            "{}/{authority}/v2.0/.well-known/openid-configuration",
            world.server.uri()
        );
        let response = world.http.get(url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{authority}");
        let document: Value = response.json().await.unwrap();
        assert_eq!(
            document["issuer"],
            format!("{}/{{tenantid}}/v2.0", world.server.uri())
        );
        assert!(document["authorization_endpoint"].is_string());
    }
}
