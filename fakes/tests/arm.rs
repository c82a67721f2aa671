//! The fake ARM over HTTP: the walkthrough's calls in order, long-running operations on the
//! model's clock, and one row per ARM error code.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use time::Duration;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer};
use xtenant_fakes::Endpoints;
use xtenant_fakes::arm::ArmResponder;
use xtenant_fakes::arm::errors::MISSING_TOKEN_CHALLENGE;
use xtenant_fakes::arm::{RequestKind, throttle_mock};
use xtenant_fakes::cloud::{
    ARM_AUDIENCES, ClientId, Cloud, ObjectId, Principal, PrincipalKind, ResourceId, SharedCloud,
    TenantId, lock,
};
use xtenant_fakes::http::MODEL_PRIORITY;

const API_VERSION: &str = "2024-11-01";
const ISSUER_BASE: &str = "https://issuer.test";
const LOGIN: &str = "https://login.test";
const DATA_OWNER: &str = "090c5cfd-751d-490a-894a-3ce6f1109419";
const SUBJECT: &str = "system:serviceaccount:default:myserviceaccount";

/// A fake ARM over a cloud with tenants `a` and `b`, and operator tokens for both.
struct Arm {
    cloud: SharedCloud,
    server: MockServer,
    http: reqwest::Client,
    tenant_a: TenantId,
    tenant_b: TenantId,
    subscription_a: String,
    subscription_b: String,
    token_a: String,
    token_b: String,
}

/// A response: status, headers and the JSON body (`Null` when empty).
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }
}

impl Arm {
    async fn start() -> Self {
        let cloud: SharedCloud = Arc::new(Mutex::new(Cloud::with_tenants(&["a", "b"])));
        let server = MockServer::builder().start().await;
        let unused: SocketAddr = (Ipv4Addr::LOCALHOST, 9).into();
        let endpoints = Arc::new(Endpoints {
            arm: server.uri(),
            login: LOGIN.into(),
            issuer: ISSUER_BASE.into(),
            servicebus_tls: unused,
            servicebus_plain: unused,
        });
        Mock::given(any())
            .respond_with(ArmResponder::new(cloud.clone(), endpoints))
            .with_priority(MODEL_PRIORITY)
            .mount(&server)
            .await;

        let (tenant_a, tenant_b, subscription_a, subscription_b) = {
            let cloud = lock(&cloud);
            let a = cloud.tenant("a").unwrap().id.clone();
            let b = cloud.tenant("b").unwrap().id.clone();
            let sub_a = cloud.subscriptions_of(&a)[0].id.as_str().to_owned();
            let sub_b = cloud.subscriptions_of(&b)[0].id.as_str().to_owned();
            (a, b, sub_a, sub_b)
        };
        let mut arm = Self {
            cloud,
            server,
            http: reqwest::Client::new(),
            tenant_a,
            tenant_b,
            subscription_a,
            subscription_b,
            token_a: String::new(),
            token_b: String::new(),
        };
        arm.token_a = arm.operator_token(&arm.tenant_a.clone());
        arm.token_b = arm.operator_token(&arm.tenant_b.clone());
        arm
    }

    /// Issues a fresh ARM token for a tenant's operator.
    fn operator_token(&self, tenant: &TenantId) -> String {
        let cloud = lock(&self.cloud);
        let operator = cloud.operator(tenant).unwrap().clone();
        cloud
            .issue_access_token(&operator, ARM_AUDIENCES[0], "1")
            .access_token
    }

    /// Sends a request to `path` as given, query included.
    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> Reply {
        let url = format!("{}{}", self.server.uri(), path);
        let mut request = self
            .http
            .request(Method::from_bytes(method.as_bytes()).unwrap(), url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("the fake ARM is reachable");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Sends a request with `api-version` appended and an optional JSON body.
    async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
        let separator = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{separator}api-version={API_VERSION}");
        self.send(method, &path, Some(token), body.map(|b| b.to_string()))
            .await
    }

    fn group_path(&self, subscription: &str, group: &str) -> String {
        format!("/subscriptions/{subscription}/resourcegroups/{group}")
    }

    /// Strips this server's base from an absolute URL, keeping path and query.
    fn local(&self, url: &str) -> String {
        url.strip_prefix(&self.server.uri())
            .expect("the URL points at the fake ARM")
            .to_owned()
    }

    fn advance(&self, by: Duration) {
        lock(&self.cloud).clock.advance(by);
    }
}

/// Builds the request body that `az aks create --enable-oidc-issuer --enable-workload-identity`
/// sends.
fn aks_create_body() -> Value {
    json!({
        "location": "eastus",
        "identity": {"type": "SystemAssigned"},
        "sku": {"name": "Base", "tier": "Free"},
        "properties": {
            "kubernetesVersion": "",
            "dnsPrefix": "aks-a-rg-a-111111",
            "enableRBAC": true,
            "agentPoolProfiles": [{"name": "nodepool1", "count": 1, "vmSize": "", "orchestratorVersion": "", "osType": "Linux", "mode": "System", "type": "VirtualMachineScaleSets"}],
            "linuxProfile": {"adminUsername": "azureuser", "ssh": {"publicKeys": [{"keyData": "ssh-rsa AAAA"}]}},
            "networkProfile": {"loadBalancerSku": "standard", "outboundType": "loadBalancer"},
            "oidcIssuerProfile": {"enabled": true},
            "securityProfile": {"workloadIdentity": {"enabled": true}},
            "addonProfiles": {},
            "storageProfile": {},
        }
    })
}

#[tokio::test]
async fn walkthrough_calls_in_order() {
    let arm = Arm::start().await;
    let (sub_a, sub_b) = (arm.subscription_a.clone(), arm.subscription_b.clone());

    // az cloud register
    let metadata = arm
        .send(
            "GET",
            "//metadata/endpoints?api-version=2022-09-01",
            None,
            None,
        )
        .await;
    assert_eq!(metadata.status, 200);
    assert_eq!(
        metadata.body["resourceManager"],
        format!("{}/", arm.server.uri())
    );
    assert_eq!(
        metadata.body["authentication"]["loginEndpoint"],
        format!("{LOGIN}/")
    );
    assert_eq!(
        metadata.body["authentication"]["audiences"][0],
        "https://management.core.windows.net/"
    );
    assert_eq!(metadata.body["suffixes"], json!({}));

    // az login --tenant a
    let subscriptions = arm
        .send(
            "GET",
            "/subscriptions?api-version=2022-12-01",
            Some(&arm.token_a),
            None,
        )
        .await;
    assert_eq!(subscriptions.status, 200);
    let items = subscriptions.body["value"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["subscriptionId"], sub_a);
    assert_eq!(items[0]["id"], format!("/subscriptions/{sub_a}"));
    assert_eq!(items[0]["tenantId"], arm.tenant_a.as_str());
    assert_eq!(items[0]["state"], "Enabled");
    let tenants = arm.call("GET", "/tenants", &arm.token_a, None).await;
    assert_eq!(tenants.body["value"][0]["tenantId"], arm.tenant_a.as_str());

    // az group create -n rg-a -l eastus
    let group_a = arm.group_path(&sub_a, "rg-a");
    let created = arm
        .call(
            "PUT",
            &group_a,
            &arm.token_a,
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(
        created.body["id"],
        format!("/subscriptions/{sub_a}/resourceGroups/rg-a")
    );
    assert_eq!(created.body["properties"]["provisioningState"], "Succeeded");
    assert_eq!(
        created.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let again = arm
        .call(
            "PUT",
            &group_a,
            &arm.token_a,
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(
        arm.call("HEAD", &group_a, &arm.token_a, None).await.status,
        204
    );

    // az aks create: existence check, then PUT and polling
    let cluster_path = format!(
        "/subscriptions/{sub_a}/resourceGroups/rg-a/providers/Microsoft.ContainerService/managedClusters/aks-a"
    );
    let missing = arm.call("GET", &cluster_path, &arm.token_a, None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.code(), "ResourceNotFound");
    assert_eq!(
        missing.message(),
        "The Resource 'Microsoft.ContainerService/managedClusters/aks-a' under resource group 'rg-a' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
    );
    assert_eq!(missing.header("x-ms-failure-cause"), Some("gateway"));

    let cluster = arm
        .call("PUT", &cluster_path, &arm.token_a, Some(aks_create_body()))
        .await;
    assert_eq!(cluster.status, 201);
    assert_eq!(cluster.body["properties"]["provisioningState"], "Creating");
    assert_eq!(cluster.header("retry-after"), Some("1"));
    let status_url = cluster
        .header("azure-asyncoperation")
        .expect("Azure-AsyncOperation header")
        .to_owned();
    let issuer_url = cluster.body["properties"]["oidcIssuerProfile"]["issuerURL"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        issuer_url.starts_with(&format!("{ISSUER_BASE}/{}/", arm.tenant_a)),
        "{issuer_url}"
    );
    assert!(issuer_url.ends_with('/'), "{issuer_url}");
    assert_eq!(
        cluster.body["properties"]["securityProfile"]["workloadIdentity"]["enabled"],
        true
    );
    assert_ne!(cluster.body["properties"]["kubernetesVersion"], "");
    assert_eq!(
        cluster.body["properties"]["agentPoolProfiles"][0]["vmSize"],
        "Standard_DS2_v2"
    );
    assert!(
        cluster.body["properties"]["fqdn"]
            .as_str()
            .unwrap()
            .ends_with(".hcp.eastus.azmk8s.io")
    );
    assert_eq!(
        cluster.body["properties"]["nodeResourceGroup"],
        "MC_rg-a_aks-a_eastus"
    );
    assert!(
        cluster.body["properties"]["identityProfile"]["kubeletidentity"]["clientId"].is_string()
    );
    assert_eq!(cluster.body["identity"]["tenantId"], arm.tenant_a.as_str());
    assert!(lock(&arm.cloud).issuer(&issuer_url).is_some());

    let operation = arm
        .send("GET", &arm.local(&status_url), Some(&arm.token_a), None)
        .await;
    assert_eq!(operation.status, 200);
    assert_eq!(operation.body["status"], "Succeeded");
    let shown = arm
        .call("GET", &cluster_path.to_lowercase(), &arm.token_a, None)
        .await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body["properties"]["provisioningState"], "Succeeded");
    assert_eq!(
        shown.body["properties"]["oidcIssuerProfile"]["issuerURL"],
        issuer_url.as_str()
    );

    // az aks get-credentials
    let credentials = arm
        .call(
            "POST",
            &format!("{cluster_path}/listClusterUserCredential"),
            &arm.token_a,
            None,
        )
        .await;
    assert_eq!(credentials.status, 200);
    assert_eq!(credentials.body["kubeconfigs"][0]["name"], "clusterUser");
    let kubeconfig = STANDARD
        .decode(
            credentials.body["kubeconfigs"][0]["value"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let kubeconfig: serde_yaml::Value = serde_yaml::from_slice(&kubeconfig).unwrap();
    assert_eq!(kubeconfig["current-context"], "aks-a");
    assert_eq!(kubeconfig["clusters"][0]["name"], "aks-a");
    assert_eq!(
        kubeconfig["contexts"][0]["context"]["user"],
        "clusterUser_rg-a_aks-a"
    );
    assert!(kubeconfig["users"][0]["user"]["token"].is_string());

    // Tenant b: group, namespace, queue
    let group_b = arm.group_path(&sub_b, "rg-b");
    assert_eq!(
        arm.call(
            "PUT",
            &group_b,
            &arm.token_b,
            Some(json!({"location": "eastus"}))
        )
        .await
        .status,
        201
    );
    let namespace_path = format!(
        "/subscriptions/{sub_b}/resourceGroups/rg-b/providers/Microsoft.ServiceBus/namespaces/sbns01"
    );
    let namespace = arm
        .call(
            "PUT",
            &namespace_path,
            &arm.token_b,
            Some(json!({"location": "eastus", "properties": {"disableLocalAuth": true}, "sku": {"name": "Standard", "tier": "Standard"}})),
        )
        .await;
    assert_eq!(namespace.status, 201);
    assert_eq!(
        namespace.body["properties"]["serviceBusEndpoint"],
        "https://sbns01.servicebus.windows.net:443/"
    );
    assert_eq!(namespace.body["properties"]["disableLocalAuth"], true);
    assert_eq!(
        namespace.body["properties"]["provisioningState"],
        "Succeeded"
    );
    let namespace_id = namespace.body["id"].as_str().unwrap().to_owned();
    assert!(lock(&arm.cloud).namespaces["sbns01"].disable_local_auth);

    let queue_path = format!("{namespace_path}/queues/myqueue");
    let queue = arm
        .call("PUT", &queue_path, &arm.token_b, Some(json!({})))
        .await;
    assert_eq!(queue.status, 200);
    assert_eq!(queue.body["properties"]["lockDuration"], "PT1M");
    assert_eq!(
        queue.body["properties"]["defaultMessageTimeToLive"],
        "P10675199DT2H48M5.4775807S"
    );
    let updated = arm
        .call(
            "PUT",
            &queue_path,
            &arm.token_b,
            Some(json!({"properties": {"lockDuration": "PT30S", "maxDeliveryCount": 5}})),
        )
        .await;
    assert_eq!(updated.status, 200);
    let queue = arm.call("GET", &queue_path, &arm.token_b, None).await;
    assert_eq!(queue.body["properties"]["lockDuration"], "PT30S");
    assert_eq!(queue.body["properties"]["maxDeliveryCount"], 5);
    assert_eq!(
        queue.body["properties"]["countDetails"]["activeMessageCount"],
        0
    );
    let queues = arm
        .call(
            "GET",
            &format!("{namespace_path}/queues"),
            &arm.token_b,
            None,
        )
        .await;
    assert_eq!(queues.body["value"].as_array().unwrap().len(), 1);

    // az identity create / show
    let identity_path = format!(
        "/subscriptions/{sub_b}/resourceGroups/rg-b/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-b"
    );
    let identity = arm
        .call(
            "PUT",
            &identity_path,
            &arm.token_b,
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(identity.status, 201);
    assert_eq!(
        identity.body["properties"]["tenantId"],
        arm.tenant_b.as_str()
    );
    let principal_id = identity.body["properties"]["principalId"]
        .as_str()
        .unwrap()
        .to_owned();
    let client_id = identity.body["properties"]["clientId"]
        .as_str()
        .unwrap()
        .to_owned();
    let shown = arm.call("GET", &identity_path, &arm.token_b, None).await;
    assert_eq!(shown.body["properties"]["clientId"], client_id.as_str());

    // az role assignment create --role "Azure Service Bus Data Owner" --scope <namespace>
    let definitions = arm
        .call(
            "GET",
            &format!("{namespace_id}/providers/Microsoft.Authorization/roleDefinitions?$filter=roleName%20eq%20'Azure%20Service%20Bus%20Data%20Owner'"),
            &arm.token_b,
            None,
        )
        .await;
    assert_eq!(definitions.status, 200);
    let definition = &definitions.body["value"][0];
    assert_eq!(definition["name"], DATA_OWNER);
    assert_eq!(definitions.body["value"].as_array().unwrap().len(), 1);
    let assignment_path = format!(
        "{namespace_id}/providers/Microsoft.Authorization/roleAssignments/{}",
        uuid::Uuid::new_v4()
    );
    let assignment_body = json!({"properties": {"roleDefinitionId": definition["id"], "principalId": principal_id, "principalType": "ServicePrincipal"}});
    let assignment = arm
        .call(
            "PUT",
            &assignment_path,
            &arm.token_b,
            Some(assignment_body.clone()),
        )
        .await;
    assert_eq!(assignment.status, 201);
    assert_eq!(
        assignment.body["properties"]["scope"],
        namespace_id.as_str()
    );
    assert_eq!(
        assignment.body["properties"]["principalId"],
        principal_id.as_str()
    );
    {
        let cloud = lock(&arm.cloud);
        let queue_scope = ResourceId::new(format!("{namespace_id}/queues/myqueue"));
        let send = "Microsoft.ServiceBus/namespaces/messages/send/action";
        assert!(cloud.has_data_action(&ObjectId::new(principal_id.clone()), &queue_scope, send));
    }
    let listed = arm
        .call(
            "GET",
            &format!(
                "{namespace_id}/providers/Microsoft.Authorization/roleAssignments?$filter=atScope()"
            ),
            &arm.token_b,
            None,
        )
        .await;
    let names: Vec<&str> = listed.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&assignment.body["name"].as_str().unwrap()),
        "{names:?}"
    );

    // az identity federated-credential create
    let credential_path = format!("{identity_path}/federatedIdentityCredentials/fic1");
    let credential_body = json!({"properties": {"issuer": issuer_url, "subject": SUBJECT, "audiences": ["api://AzureADTokenExchange"]}});
    let credential = arm
        .call(
            "PUT",
            &credential_path,
            &arm.token_b,
            Some(credential_body.clone()),
        )
        .await;
    assert_eq!(credential.status, 201);
    assert_eq!(credential.body["properties"]["issuer"], issuer_url.as_str());
    assert_eq!(
        arm.call("PUT", &credential_path, &arm.token_b, Some(credential_body))
            .await
            .status,
        200
    );
    let credentials = arm
        .call(
            "GET",
            &format!("{identity_path}/federatedIdentityCredentials"),
            &arm.token_b,
            None,
        )
        .await;
    assert_eq!(credentials.body["value"].as_array().unwrap().len(), 1);
    {
        let cloud = lock(&arm.cloud);
        let identity_id = ResourceId::new(identity_path.clone());
        assert_eq!(cloud.effective_credentials(&identity_id).len(), 1);
    }

    // Clean-up: az group delete, polled through Location
    for (group, token) in [(&group_b, &arm.token_b), (&group_a, &arm.token_a)] {
        let deleted = arm.call("DELETE", group, token, None).await;
        assert_eq!(deleted.status, 202);
        assert_eq!(deleted.header("retry-after"), Some("1"));
        let location = deleted
            .header("location")
            .expect("Location header")
            .to_owned();
        assert!(location.contains("/operationresults/"), "{location}");
        let done = arm
            .send("GET", &arm.local(&location), Some(token), None)
            .await;
        assert_eq!(done.status, 200);
        let gone = arm.call("GET", group, token, None).await;
        assert_eq!(gone.status, 404);
        assert_eq!(gone.code(), "ResourceGroupNotFound");
    }
    let cloud = lock(&arm.cloud);
    assert!(cloud.namespaces.is_empty());
    assert!(cloud.identities.is_empty());
    assert!(cloud.clusters.is_empty());
    assert!(cloud.issuers.is_empty());
    assert!(cloud.federated_credentials.is_empty());
}

#[tokio::test]
async fn cluster_creation_follows_model_clock() {
    let arm = Arm::start().await;
    lock(&arm.cloud).delays.operation_duration = Duration::minutes(10);
    let group = arm.group_path(&arm.subscription_a, "rg-a");
    arm.call(
        "PUT",
        &group,
        &arm.token_a,
        Some(json!({"location": "eastus"})),
    )
    .await;
    let cluster_path =
        format!("{group}/providers/Microsoft.ContainerService/managedClusters/aks-a");

    let created = arm
        .call("PUT", &cluster_path, &arm.token_a, Some(aks_create_body()))
        .await;
    let status_path = arm.local(created.header("azure-asyncoperation").unwrap());
    let running = arm
        .send("GET", &status_path, Some(&arm.token_a), None)
        .await;
    assert_eq!(running.body["status"], "InProgress");
    let shown = arm.call("GET", &cluster_path, &arm.token_a, None).await;
    assert_eq!(shown.body["properties"]["provisioningState"], "Creating");

    arm.advance(Duration::minutes(11));
    let finished = arm
        .send("GET", &status_path, Some(&arm.token_a), None)
        .await;
    assert_eq!(finished.body["status"], "Succeeded");
    assert!(finished.body["endTime"].is_string());
    let shown = arm.call("GET", &cluster_path, &arm.token_a, None).await;
    assert_eq!(shown.body["properties"]["provisioningState"], "Succeeded");
}

#[tokio::test]
async fn credential_on_unreplicated_identity_has_no_parent() {
    let arm = Arm::start().await;
    lock(&arm.cloud).delays.identity_replication = Duration::seconds(30);
    let group = arm.group_path(&arm.subscription_a, "rg-a");
    arm.call(
        "PUT",
        &group,
        &arm.token_a,
        Some(json!({"location": "eastus"})),
    )
    .await;
    let identity =
        format!("{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1");
    arm.call(
        "PUT",
        &identity,
        &arm.token_a,
        Some(json!({"location": "eastus"})),
    )
    .await;
    let credential =
        format!("{identity}/federatedIdentityCredentials/fic1?api-version={API_VERSION}");
    let body = json!({"properties": {
        "issuer": "https://issuer.test/",
        "subject": "system:serviceaccount:default:sa",
        "audiences": ["api://AzureADTokenExchange"],
    }});

    let early = arm
        .send(
            "PUT",
            &credential,
            Some(&arm.token_a),
            Some(body.to_string()),
        )
        .await;
    assert_eq!(early.status, 404, "{}", early.body);
    assert_eq!(early.body["error"]["code"], "ParentResourceNotFound");
    assert_eq!(
        early.body["error"]["message"],
        "The parent user-assigned identity doesn't exist."
    );

    arm.advance(Duration::seconds(31));
    let later = arm
        .send(
            "PUT",
            &credential,
            Some(&arm.token_a),
            Some(body.to_string()),
        )
        .await;
    assert_eq!(later.status, 201, "{}", later.body);
}

#[tokio::test]
async fn namespace_provisioning_follows_model_clock() {
    let arm = Arm::start().await;
    lock(&arm.cloud).delays.operation_duration = Duration::minutes(2);
    let group = arm.group_path(&arm.subscription_a, "rg-a");
    arm.call(
        "PUT",
        &group,
        &arm.token_a,
        Some(json!({"location": "eastus"})),
    )
    .await;
    let namespace_path = format!("{group}/providers/Microsoft.ServiceBus/namespaces/sbns-clock01");
    let body = json!({"location": "eastus", "sku": {"name": "Standard", "tier": "Standard"}});

    let created = arm
        .call("PUT", &namespace_path, &arm.token_a, Some(body))
        .await;
    assert_eq!(created.body["properties"]["provisioningState"], "Created");
    assert_eq!(created.body["properties"]["status"], "Activating");

    arm.advance(Duration::minutes(3));
    let shown = arm.call("GET", &namespace_path, &arm.token_a, None).await;
    assert_eq!(shown.body["properties"]["provisioningState"], "Succeeded");
    assert_eq!(shown.body["properties"]["status"], "Active");
}

#[tokio::test]
async fn group_deletion_shows_deleting_until_done() {
    let arm = Arm::start().await;
    lock(&arm.cloud).delays.operation_duration = Duration::minutes(5);
    let group = arm.group_path(&arm.subscription_a, "rg-a");
    arm.call(
        "PUT",
        &group,
        &arm.token_a,
        Some(json!({"location": "eastus"})),
    )
    .await;

    let deleted = arm.call("DELETE", &group, &arm.token_a, None).await;
    assert_eq!(deleted.status, 202);
    let location = arm.local(deleted.header("location").unwrap());
    let shown = arm.call("GET", &group, &arm.token_a, None).await;
    assert_eq!(shown.body["properties"]["provisioningState"], "Deleting");
    let polled = arm.send("GET", &location, Some(&arm.token_a), None).await;
    assert_eq!(polled.status, 202);
    assert_eq!(polled.header("retry-after"), Some("1"));
    let write = arm
        .call(
            "PUT",
            &format!("{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"),
            &arm.token_a,
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(write.status, 409);
    assert_eq!(write.code(), "ResourceGroupBeingDeleted");

    arm.advance(Duration::minutes(6));
    assert_eq!(
        arm.send("GET", &location, Some(&arm.token_a), None)
            .await
            .status,
        200
    );
    assert_eq!(
        arm.call("GET", &group, &arm.token_a, None).await.status,
        404
    );
}

#[tokio::test]
async fn queue_count_details_are_live() {
    let arm = Arm::start().await;
    let group = arm.group_path(&arm.subscription_b, "rg-b");
    arm.call(
        "PUT",
        &group,
        &arm.token_b,
        Some(json!({"location": "eastus"})),
    )
    .await;
    let namespace = format!("{group}/providers/Microsoft.ServiceBus/namespaces/sbns01");
    arm.call(
        "PUT",
        &namespace,
        &arm.token_b,
        Some(json!({"location": "eastus"})),
    )
    .await;
    let queue_path = format!("{namespace}/queues/q1");
    arm.call("PUT", &queue_path, &arm.token_b, Some(json!({})))
        .await;
    {
        let mut cloud = lock(&arm.cloud);
        let now = cloud.now();
        let queue = cloud
            .namespaces
            .get_mut("sbns01")
            .unwrap()
            .queue_mut("q1")
            .unwrap();
        queue.enqueue(Default::default(), bytes_of("one"), now);
        queue.enqueue(Default::default(), bytes_of("two"), now);
    }

    let queue = arm.call("GET", &queue_path, &arm.token_b, None).await;
    assert_eq!(
        queue.body["properties"]["countDetails"]["activeMessageCount"],
        2
    );
    assert_eq!(queue.body["properties"]["messageCount"], 2);
}

fn bytes_of(text: &str) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(text.as_bytes())
}

#[tokio::test]
async fn role_assignment_waits_for_identity_replication() {
    let arm = Arm::start().await;
    lock(&arm.cloud).delays.identity_replication = Duration::minutes(1);
    let group = arm.group_path(&arm.subscription_b, "rg-b");
    arm.call(
        "PUT",
        &group,
        &arm.token_b,
        Some(json!({"location": "eastus"})),
    )
    .await;
    let identity = arm
        .call(
            "PUT",
            &format!("{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"),
            &arm.token_b,
            Some(json!({"location": "eastus"})),
        )
        .await;
    let principal_id = identity.body["properties"]["principalId"]
        .as_str()
        .unwrap()
        .to_owned();
    let role = format!(
        "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{DATA_OWNER}",
        arm.subscription_b
    );
    let assign = |typed: bool| {
        let mut properties = json!({"roleDefinitionId": role, "principalId": principal_id});
        if typed {
            properties["principalType"] = json!("ServicePrincipal");
        }
        let path = format!(
            "{group}/providers/Microsoft.Authorization/roleAssignments/{}",
            uuid::Uuid::new_v4()
        );
        (path, json!({ "properties": properties }))
    };

    let (path, body) = assign(false);
    let early = arm.call("PUT", &path, &arm.token_b, Some(body)).await;
    assert_eq!(early.status, 400);
    assert_eq!(early.code(), "PrincipalNotFound");

    arm.advance(Duration::minutes(2));
    let (path, body) = assign(false);
    assert_eq!(
        arm.call("PUT", &path, &arm.token_b, Some(body))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn role_assignment_with_principal_type_skips_replication() {
    let arm = Arm::start().await;
    lock(&arm.cloud).delays.identity_replication = Duration::minutes(1);
    let group = arm.group_path(&arm.subscription_b, "rg-b");
    arm.call(
        "PUT",
        &group,
        &arm.token_b,
        Some(json!({"location": "eastus"})),
    )
    .await;
    let identity = arm
        .call(
            "PUT",
            &format!("{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"),
            &arm.token_b,
            Some(json!({"location": "eastus"})),
        )
        .await;
    let body = json!({"properties": {
        "roleDefinitionId": DATA_OWNER,
        "principalId": identity.body["properties"]["principalId"],
        "principalType": "ServicePrincipal",
    }});
    let path = format!(
        "{group}/providers/Microsoft.Authorization/roleAssignments/{}",
        uuid::Uuid::new_v4()
    );
    assert_eq!(
        arm.call("PUT", &path, &arm.token_b, Some(body))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn federated_credentials_limited_to_twenty() {
    let arm = Arm::start().await;
    let group = arm.group_path(&arm.subscription_b, "rg-b");
    arm.call(
        "PUT",
        &group,
        &arm.token_b,
        Some(json!({"location": "eastus"})),
    )
    .await;
    let identity =
        format!("{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1");
    arm.call(
        "PUT",
        &identity,
        &arm.token_b,
        Some(json!({"location": "eastus"})),
    )
    .await;
    for index in 1..=21 {
        let body = json!({"properties": {"issuer": "https://issuer.test/a/", "subject": format!("sub{index}"), "audiences": ["api://AzureADTokenExchange"]}});
        let reply = arm
            .call(
                "PUT",
                &format!("{identity}/federatedIdentityCredentials/fic{index}"),
                &arm.token_b,
                Some(body),
            )
            .await;
        let expected = if index <= 20 { 201 } else { 400 };
        assert_eq!(reply.status, expected, "credential {index}: {}", reply.body);
    }
}

/// How a row of the error table authenticates.
#[derive(Clone, Copy)]
enum Auth {
    Missing,
    Garbage,
    Expired,
    WrongAudience,
    TenantA,
    TenantB,
    /// A principal of tenant b with no role assignment.
    NoRole,
}

struct ErrorCase {
    code: &'static str,
    status: u16,
    method: &'static str,
    path: String,
    auth: Auth,
    body: Option<String>,
    /// A header and the start of its expected value.
    header: Option<(&'static str, String)>,
    message_start: String,
}

#[tokio::test]
async fn errors_match_arm_codes() {
    let arm = Arm::start().await;
    let (sub_a, sub_b) = (arm.subscription_a.clone(), arm.subscription_b.clone());
    let expired = arm.token_a.clone();
    arm.advance(Duration::hours(2));
    let token_a = arm.operator_token(&arm.tenant_a);
    let token_b = arm.operator_token(&arm.tenant_b);
    let (no_role, wrong_audience, foreign_principal) = {
        let mut cloud = lock(&arm.cloud);
        let principal = Principal {
            object_id: ObjectId::random(),
            client_id: ClientId::random(),
            tenant: arm.tenant_b.clone(),
            display_name: "no-role".into(),
            kind: PrincipalKind::Application {
                secret: "unused".into(),
            },
            created_at: cloud.now(),
        };
        cloud.principals.push(principal.clone());
        let no_role = cloud
            .issue_access_token(&principal, ARM_AUDIENCES[0], "1")
            .access_token;
        let operator = cloud.operator(&arm.tenant_b).unwrap().clone();
        let wrong_audience = cloud
            .issue_access_token(&operator, "https://servicebus.azure.net", "1")
            .access_token;
        let foreign = cloud.operator(&arm.tenant_a).unwrap().object_id.clone();
        (no_role, wrong_audience, foreign)
    };

    // Setup in tenant b: a group, an identity with one credential, a role assignment, and a
    // namespace name taken in tenant a.
    let group_b = format!("/subscriptions/{sub_b}/resourceGroups/rg-b");
    let call = |method: &'static str, path: String, token: String, body: Value| {
        let arm = &arm;
        async move { arm.call(method, &path, &token, Some(body)).await }
    };
    call(
        "PUT",
        group_b.clone(),
        token_b.clone(),
        json!({"location": "eastus"}),
    )
    .await;
    call(
        "PUT",
        format!("/subscriptions/{sub_a}/resourceGroups/rg-a"),
        token_a.clone(),
        json!({"location": "eastus"}),
    )
    .await;
    let taken = call(
        "PUT",
        format!("/subscriptions/{sub_a}/resourceGroups/rg-a/providers/Microsoft.ServiceBus/namespaces/sbtaken01"),
        token_a.clone(),
        json!({"location": "eastus"}),
    )
    .await;
    assert_eq!(taken.status, 201);
    let identity =
        format!("{group_b}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-b");
    let created = call(
        "PUT",
        identity.clone(),
        token_b.clone(),
        json!({"location": "eastus"}),
    )
    .await;
    let principal_id = created.body["properties"]["principalId"]
        .as_str()
        .unwrap()
        .to_owned();
    let credential = json!({"properties": {"issuer": "https://issuer.test/a/", "subject": SUBJECT, "audiences": ["api://AzureADTokenExchange"]}});
    call(
        "PUT",
        format!("{identity}/federatedIdentityCredentials/fic1"),
        token_b.clone(),
        credential,
    )
    .await;
    let role = format!(
        "/subscriptions/{sub_b}/providers/Microsoft.Authorization/roleDefinitions/{DATA_OWNER}"
    );
    let grant = json!({"properties": {"roleDefinitionId": role, "principalId": principal_id, "principalType": "ServicePrincipal"}});
    let assignments = format!("{group_b}/providers/Microsoft.Authorization/roleAssignments");
    let existing = call(
        "PUT",
        format!("{assignments}/{}", uuid::Uuid::new_v4()),
        token_b.clone(),
        grant.clone(),
    )
    .await;
    assert_eq!(existing.status, 201);

    let tenant_a = arm.tenant_a.to_string();
    let tenant_b = arm.tenant_b.to_string();
    let group_a = format!("/subscriptions/{sub_a}/resourcegroups/rg-a");
    let unknown_subscription = uuid::Uuid::new_v4().to_string();
    let cases = vec![
        ErrorCase {
            code: "AuthenticationFailed",
            status: 401,
            method: "GET",
            path: group_a.clone(),
            auth: Auth::Missing,
            body: None,
            header: Some(("www-authenticate", MISSING_TOKEN_CHALLENGE.into())),
            message_start: "Authentication failed. The 'Authorization' header is missing.".into(),
        },
        ErrorCase {
            code: "InvalidAuthenticationToken",
            status: 401,
            method: "GET",
            path: group_a.clone(),
            auth: Auth::Garbage,
            body: None,
            header: Some(("www-authenticate", "Bearer authorization_uri=".into())),
            message_start: "The access token is invalid.".into(),
        },
        ErrorCase {
            code: "InvalidAuthenticationToken",
            status: 401,
            method: "GET",
            path: group_b.clone(),
            auth: Auth::WrongAudience,
            body: None,
            header: Some(("www-authenticate", "Bearer authorization_uri=".into())),
            message_start: "The access token has been obtained for wrong audience or resource 'https://servicebus.azure.net'.".into(),
        },
        ErrorCase {
            code: "ExpiredAuthenticationToken",
            status: 401,
            method: "GET",
            path: group_a.clone(),
            auth: Auth::Expired,
            body: None,
            header: Some(("www-authenticate", "Bearer authorization_uri=".into())),
            message_start: "The access token expiry UTC time '".into(),
        },
        ErrorCase {
            code: "InvalidAuthenticationTokenTenant",
            status: 401,
            method: "GET",
            path: group_b.clone(),
            auth: Auth::TenantA,
            body: None,
            header: Some(("www-authenticate", format!("Bearer authorization_uri=\"https://login.windows.net/{tenant_b}\""))),
            message_start: format!(
                "The access token is from the wrong issuer 'https://sts.windows.net/{tenant_a}/'. It must match the tenant 'https://sts.windows.net/{tenant_b}/' associated with this subscription. Please use the authority (URL) 'https://login.windows.net/{tenant_b}' to get the token. Note, if the subscription is transferred to another tenant there is no impact to the services, but information about new tenant could take time to propagate (up to an hour). If you just transferred your subscription and see this error message, please try back later."
            ),
        },
        ErrorCase {
            code: "SubscriptionNotFound",
            status: 404,
            method: "GET",
            path: format!("/subscriptions/{unknown_subscription}/resourcegroups/rg"),
            auth: Auth::TenantA,
            body: None,
            header: None,
            message_start: format!("The subscription '{unknown_subscription}' could not be found."),
        },
        ErrorCase {
            code: "AuthorizationFailed",
            status: 403,
            method: "PUT",
            path: format!("/subscriptions/{sub_b}/resourcegroups/rg-new"),
            auth: Auth::NoRole,
            body: Some(r#"{"location":"eastus"}"#.into()),
            header: None,
            message_start: "The client '".into(),
        },
        ErrorCase {
            code: "InvalidRequestContent",
            status: 400,
            method: "PUT",
            path: group_b.clone(),
            auth: Auth::TenantB,
            body: Some("{not json".into()),
            header: None,
            message_start: "The request content was invalid and could not be deserialized: 'key must be a string".into(),
        },
        ErrorCase {
            code: "InvalidResourceType",
            status: 404,
            method: "GET",
            path: format!("{group_b}/providers/Microsoft.Web/sites/app1"),
            auth: Auth::TenantB,
            body: None,
            header: Some(("x-ms-failure-cause", "gateway".into())),
            message_start: "The resource type 'sites' could not be found in the namespace 'Microsoft.Web'".into(),
        },
        ErrorCase {
            code: "MethodNotAllowed",
            status: 405,
            method: "PATCH",
            path: format!("{identity}/federatedIdentityCredentials"),
            auth: Auth::TenantB,
            body: None,
            header: None,
            message_start: "The requested resource does not support http method 'PATCH'.".into(),
        },
        ErrorCase {
            code: "LocationRequired",
            status: 400,
            method: "PUT",
            path: format!("/subscriptions/{sub_b}/resourcegroups/rg-nowhere"),
            auth: Auth::TenantB,
            body: Some("{}".into()),
            header: None,
            message_start: "The location property is required for this definition.".into(),
        },
        ErrorCase {
            code: "ResourceGroupNotFound",
            status: 404,
            method: "GET",
            path: format!("/subscriptions/{sub_b}/resourceGroups/rg-missing/providers/Microsoft.ServiceBus/namespaces/sbns01"),
            auth: Auth::TenantB,
            body: None,
            header: Some(("x-ms-failure-cause", "gateway".into())),
            message_start: "Resource group 'rg-missing' could not be found.".into(),
        },
        ErrorCase {
            code: "ResourceNotFound",
            status: 404,
            method: "GET",
            path: format!("{group_b}/providers/Microsoft.ServiceBus/namespaces/sbns01/queues/q1"),
            auth: Auth::TenantB,
            body: None,
            header: Some(("x-ms-failure-cause", "gateway".into())),
            message_start: "The Resource 'Microsoft.ServiceBus/namespaces/sbns01' under resource group 'rg-b' was not found.".into(),
        },
        ErrorCase {
            code: "BadRequest",
            status: 400,
            method: "PUT",
            path: format!("{group_b}/providers/Microsoft.ServiceBus/namespaces/bad-sb"),
            auth: Auth::TenantB,
            body: Some(r#"{"location":"eastus"}"#.into()),
            header: None,
            message_start: "The specified service namespace is invalid. CorrelationId: ".into(),
        },
        ErrorCase {
            code: "BadRequest",
            status: 400,
            method: "PUT",
            path: format!("{group_b}/providers/Microsoft.ServiceBus/namespaces/SBTAKEN01"),
            auth: Auth::TenantB,
            body: Some(r#"{"location":"eastus"}"#.into()),
            header: None,
            message_start: "The specified name is not available. For more information visit https://aka.ms/eventhubsarmexceptions. CorrelationId: ".into(),
        },
        ErrorCase {
            code: "BadRequest",
            status: 400,
            method: "PUT",
            path: format!("{identity}/federatedIdentityCredentials/fic2"),
            auth: Auth::TenantB,
            body: Some(r#"{"properties":{"issuer":"https://issuer.test/a/","subject":"s2","audiences":["a","b"]}}"#.into()),
            header: None,
            message_start: "Federated identity credentials must have exactly one audience.".into(),
        },
        ErrorCase {
            code: "BadRequest",
            status: 400,
            method: "PUT",
            path: format!("{identity}/federatedIdentityCredentials/fic3"),
            auth: Auth::TenantB,
            body: Some(json!({"properties": {"issuer": "https://issuer.test/a/", "subject": SUBJECT, "audiences": ["api://AzureADTokenExchange"]}}).to_string()),
            header: None,
            message_start: "Issuer and subject combination already exists for this Managed Identity.".into(),
        },
        ErrorCase {
            code: "ParentResourceNotFound",
            status: 404,
            method: "PUT",
            path: format!("{group_b}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/absent/federatedIdentityCredentials/fic1"),
            auth: Auth::TenantB,
            body: Some(r#"{"properties":{"issuer":"https://issuer.test/a/","subject":"s","audiences":["api://AzureADTokenExchange"]}}"#.into()),
            header: None,
            message_start: "The parent user-assigned identity doesn't exist.".into(),
        },
        ErrorCase {
            code: "PrincipalNotFound",
            status: 400,
            method: "PUT",
            path: format!("{assignments}/{}", uuid::Uuid::new_v4()),
            auth: Auth::TenantB,
            body: Some(json!({"properties": {"roleDefinitionId": DATA_OWNER, "principalId": foreign_principal}}).to_string()),
            header: None,
            message_start: format!(
                "Principal {} does not exist in the directory {tenant_b}. Check that you have the correct principal ID.",
                foreign_principal.as_str().replace('-', "")
            ),
        },
        ErrorCase {
            code: "RoleAssignmentExists",
            status: 409,
            method: "PUT",
            path: format!("{assignments}/{}", uuid::Uuid::new_v4()),
            auth: Auth::TenantB,
            body: Some(grant.to_string()),
            header: None,
            message_start: "The role assignment already exists.".into(),
        },
        ErrorCase {
            code: "InvalidRoleAssignmentId",
            status: 400,
            method: "PUT",
            path: format!("{assignments}/not-a-guid"),
            auth: Auth::TenantB,
            body: Some(grant.to_string()),
            header: None,
            message_start: "The role assignment ID 'not-a-guid' is not valid. The role assignment ID must be a GUID.".into(),
        },
        ErrorCase {
            code: "RoleDefinitionDoesNotExist",
            status: 400,
            method: "PUT",
            path: format!("{assignments}/{}", uuid::Uuid::new_v4()),
            auth: Auth::TenantB,
            body: Some(json!({"properties": {"roleDefinitionId": "00000000-0000-0000-0000-000000000001", "principalId": principal_id}}).to_string()),
            header: None,
            message_start: "The specified role definition with ID '00000000-0000-0000-0000-000000000001' does not exist.".into(),
        },
        ErrorCase {
            code: "RoleAssignmentNotFound",
            status: 404,
            method: "GET",
            path: format!("{assignments}/{}", uuid::Uuid::nil()),
            auth: Auth::TenantB,
            body: None,
            header: None,
            message_start: format!("The role assignment '{}' is not found.", uuid::Uuid::nil()),
        },
    ];

    for case in cases {
        let token = match case.auth {
            Auth::Missing => None,
            Auth::Garbage => Some("not-a-jwt".to_owned()),
            Auth::Expired => Some(expired.clone()),
            Auth::WrongAudience => Some(wrong_audience.clone()),
            Auth::TenantA => Some(token_a.clone()),
            Auth::TenantB => Some(token_b.clone()),
            Auth::NoRole => Some(no_role.clone()),
        };
        let path = format!("{}?api-version={API_VERSION}", case.path);
        let reply = arm
            .send(case.method, &path, token.as_deref(), case.body.clone())
            .await;
        let row = format!(
            "{} {} {}: {}",
            case.code, case.method, case.path, reply.body
        );
        assert_eq!(reply.status, case.status, "{row}");
        assert_eq!(reply.code(), case.code, "{row}");
        assert!(reply.message().starts_with(&case.message_start), "{row}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/json; charset=utf-8"),
            "{row}"
        );
        if let Some((name, start)) = &case.header {
            let value = reply.header(name).unwrap_or_default();
            assert!(
                value.starts_with(start.as_str()),
                "{row}: header {name} is '{value}'"
            );
        }
    }

    let missing_version = arm.send("GET", &group_b, Some(&token_b), None).await;
    assert_eq!(missing_version.status, 400);
    assert_eq!(missing_version.code(), "MissingApiVersionParameter");
    assert_eq!(
        missing_version.message(),
        "The api-version query parameter (?api-version=) is required for all requests."
    );
}

/// Creates tenant b's group `rg-b` with identity `id1` and returns the identity's path.
async fn identity_in_tenant_b(arm: &Arm) -> String {
    let group = arm.group_path(&arm.subscription_b, "rg-b");
    let created = arm
        .call(
            "PUT",
            &group,
            &arm.token_b,
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(created.status, 201);
    let identity =
        format!("{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1");
    let created = arm
        .call(
            "PUT",
            &identity,
            &arm.token_b,
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(created.status, 201);
    identity
}

fn credential_body(subject: &str) -> Value {
    json!({"properties": {"issuer": "https://issuer.test/a/", "subject": subject, "audiences": ["api://AzureADTokenExchange"]}})
}

#[tokio::test]
async fn concurrent_credential_writes_conflict() {
    let arm = Arm::start().await;
    let identity = identity_in_tenant_b(&arm).await;
    lock(&arm.cloud).delays.fic_propagation = Duration::seconds(30);
    let first = format!("{identity}/federatedIdentityCredentials/fic1");
    let second = format!("{identity}/federatedIdentityCredentials/fic2");
    let created = arm
        .call("PUT", &first, &arm.token_b, Some(credential_body("s1")))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);

    // Within fic1's propagation window every credential write under id1 conflicts.
    let canonical_identity = identity.replace("/resourcegroups/", "/resourceGroups/");
    let expected_message = format!(
        "Too many Federated Identity Credentials are written concurrently for the managed identity '{canonical_identity}'. Concurrent Federated Identity Credentials writes under the same managed identity are not supported."
    );
    let writes = [
        ("PUT", second.clone(), Some(credential_body("s2"))),
        ("PUT", first.clone(), Some(credential_body("s1-changed"))),
        ("DELETE", first.clone(), None),
    ];
    for (method, path, body) in writes {
        let reply = arm.call(method, &path, &arm.token_b, body).await;
        let row = format!("{method} {path}: {}", reply.body);
        assert_eq!(reply.status, 409, "{row}");
        assert_eq!(
            reply.code(),
            "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity",
            "{row}"
        );
        assert_eq!(reply.message(), expected_message, "{row}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/json; charset=utf-8"),
            "{row}"
        );
    }
    let read = arm.call("GET", &first, &arm.token_b, None).await;
    assert_eq!(read.status, 200, "reads are not writes");

    // Another identity is not affected.
    let other = identity.replace("/id1", "/id2");
    arm.call(
        "PUT",
        &other,
        &arm.token_b,
        Some(json!({"location": "eastus"})),
    )
    .await;
    let elsewhere = arm
        .call(
            "PUT",
            &format!("{other}/federatedIdentityCredentials/fic1"),
            &arm.token_b,
            Some(credential_body("s1")),
        )
        .await;
    assert_eq!(elsewhere.status, 201, "{}", elsewhere.body);

    arm.advance(Duration::seconds(31));
    let after = arm
        .call("PUT", &second, &arm.token_b, Some(credential_body("s2")))
        .await;
    assert_eq!(after.status, 201, "{}", after.body);
}

#[tokio::test]
async fn credential_writes_without_delay_never_conflict() {
    let arm = Arm::start().await;
    let identity = identity_in_tenant_b(&arm).await;
    for index in 1..=3 {
        let reply = arm
            .call(
                "PUT",
                &format!("{identity}/federatedIdentityCredentials/fic{index}"),
                &arm.token_b,
                Some(credential_body(&format!("s{index}"))),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
}

#[tokio::test]
async fn throttled_writes_get_429() {
    let arm = Arm::start().await;
    throttle_mock(&arm.subscription_b, RequestKind::Write, 7)
        .up_to_n_times(1)
        .mount(&arm.server)
        .await;
    let group = arm.group_path(&arm.subscription_b, "rg-b");
    let operator_b = lock(&arm.cloud)
        .operator(&arm.tenant_b)
        .unwrap()
        .object_id
        .clone();

    let throttled = arm
        .call(
            "PUT",
            &group,
            &arm.token_b,
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.code(), "SubscriptionRequestsThrottled");
    assert_eq!(
        throttled.message(),
        format!(
            "Number of 'write' requests for subscription '{}' actor '{operator_b}' exceeded. Please try again after '7' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling",
            arm.subscription_b
        )
    );
    assert_eq!(throttled.header("retry-after"), Some("7"));
    assert_eq!(
        throttled.header("x-ms-ratelimit-remaining-subscription-writes"),
        Some("0")
    );
    assert_eq!(
        throttled.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert!(
        lock(&arm.cloud).resource_groups.is_empty(),
        "a throttled write does not reach the model"
    );

    let read = arm.call("GET", &group, &arm.token_b, None).await;
    assert_eq!(read.status, 404, "reads are not throttled: {}", read.body);
    let other_subscription = arm
        .call(
            "PUT",
            &arm.group_path(&arm.subscription_a, "rg-a"),
            &arm.token_a,
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(other_subscription.status, 201);

    let retried = arm
        .call(
            "PUT",
            &group,
            &arm.token_b,
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(retried.status, 201, "the mock throttles one request");
    assert_eq!(
        retried.header("x-ms-ratelimit-remaining-subscription-writes"),
        Some("1199")
    );
}

#[tokio::test]
async fn throttled_reads_and_deletes_name_their_budget() {
    let arm = Arm::start().await;
    let group = arm.group_path(&arm.subscription_a, "rg-a");
    arm.call(
        "PUT",
        &group,
        &arm.token_a,
        Some(json!({"location": "eastus"})),
    )
    .await;
    let fresh = arm.call("GET", &group, &arm.token_a, None).await;
    assert_eq!(
        fresh.header("x-ms-ratelimit-remaining-subscription-reads"),
        Some("11999")
    );

    throttle_mock(&arm.subscription_a, RequestKind::Read, 3)
        .mount(&arm.server)
        .await;
    throttle_mock(&arm.subscription_a, RequestKind::Delete, 5)
        .mount(&arm.server)
        .await;
    let cases = [
        (
            "GET",
            "read",
            "3",
            "x-ms-ratelimit-remaining-subscription-reads",
        ),
        (
            "HEAD",
            "read",
            "3",
            "x-ms-ratelimit-remaining-subscription-reads",
        ),
        (
            "DELETE",
            "delete",
            "5",
            "x-ms-ratelimit-remaining-subscription-deletes",
        ),
    ];
    // ARM matches the path without regard to case.
    let upper = group.replace("/subscriptions/", "/SUBSCRIPTIONS/");
    for (method, word, seconds, header) in cases {
        let reply = arm.call(method, &upper, &arm.token_a, None).await;
        let row = format!("{method}: {}", reply.body);
        assert_eq!(reply.status, 429, "{row}");
        assert_eq!(reply.header("retry-after"), Some(seconds), "{row}");
        assert_eq!(reply.header(header), Some("0"), "{row}");
        if method != "HEAD" {
            assert_eq!(reply.code(), "SubscriptionRequestsThrottled", "{row}");
            assert!(
                reply
                    .message()
                    .starts_with(&format!("Number of '{word}' requests")),
                "{row}"
            );
        }
    }
}

#[tokio::test]
async fn health_needs_no_token() {
    let arm = Arm::start().await;
    let reply = arm.send("GET", "/health", None, None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, json!({"status": "Healthy"}));
}

/// Creates group `rg-b` and namespace `sbns-rules01` in tenant B and returns the
/// namespace's path.
async fn namespace_in_tenant_b(arm: &Arm) -> String {
    let group = arm.group_path(&arm.subscription_b, "rg-b");
    arm.call(
        "PUT",
        &group,
        &arm.token_b,
        Some(json!({"location": "eastus"})),
    )
    .await;
    let namespace = format!("{group}/providers/Microsoft.ServiceBus/namespaces/sbns-rules01");
    let created = arm
        .call(
            "PUT",
            &namespace,
            &arm.token_b,
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    namespace
}

fn rights_body(rights: &[&str]) -> Value {
    json!({"properties": {"rights": rights}})
}

#[tokio::test]
async fn namespace_comes_with_root_rule() {
    let arm = Arm::start().await;
    let namespace = namespace_in_tenant_b(&arm).await;

    let listed = arm
        .call(
            "GET",
            &format!("{namespace}/authorizationRules"),
            &arm.token_b,
            None,
        )
        .await;
    assert_eq!(listed.status, 200);
    let rules = listed.body["value"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["name"], "RootManageSharedAccessKey");
    assert_eq!(
        rules[0]["type"],
        "Microsoft.ServiceBus/Namespaces/AuthorizationRules"
    );
    assert_eq!(
        rules[0]["id"].as_str().unwrap().to_ascii_lowercase(),
        format!("{namespace}/authorizationRules/RootManageSharedAccessKey").to_ascii_lowercase()
    );
    assert_eq!(
        rules[0]["properties"]["rights"],
        json!(["Listen", "Manage", "Send"])
    );

    let keys = arm
        .call(
            "POST",
            &format!("{namespace}/authorizationRules/RootManageSharedAccessKey/listKeys"),
            &arm.token_b,
            None,
        )
        .await;
    assert_eq!(keys.status, 200);
    assert_eq!(keys.body["keyName"], "RootManageSharedAccessKey");
    let primary = keys.body["primaryKey"].as_str().unwrap();
    let secondary = keys.body["secondaryKey"].as_str().unwrap();
    assert_eq!(STANDARD.decode(primary).unwrap().len(), 32);
    assert_eq!(STANDARD.decode(secondary).unwrap().len(), 32);
    assert_ne!(primary, secondary);
    assert_eq!(
        keys.body["primaryConnectionString"],
        format!(
            "Endpoint=sb://sbns-rules01.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={primary}"
        )
    );
    assert_eq!(
        keys.body["secondaryConnectionString"],
        format!(
            "Endpoint=sb://sbns-rules01.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={secondary}"
        )
    );
}

#[tokio::test]
async fn authorization_rule_create_show_delete() {
    let arm = Arm::start().await;
    let namespace = namespace_in_tenant_b(&arm).await;
    let rule = format!("{namespace}/authorizationRules/listen-only");

    let created = arm
        .call("PUT", &rule, &arm.token_b, Some(rights_body(&["Listen"])))
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(created.body["name"], "listen-only");
    assert_eq!(created.body["properties"]["rights"], json!(["Listen"]));
    let keys_before = arm
        .call("POST", &format!("{rule}/listKeys"), &arm.token_b, None)
        .await;

    let updated = arm
        .call(
            "PUT",
            &rule,
            &arm.token_b,
            Some(rights_body(&["Send", "Listen"])),
        )
        .await;
    assert_eq!(updated.status, 200);
    assert_eq!(
        updated.body["properties"]["rights"],
        json!(["Listen", "Send"])
    );
    let keys_after = arm
        .call("POST", &format!("{rule}/listKeys"), &arm.token_b, None)
        .await;
    assert_eq!(
        keys_after.body["primaryKey"], keys_before.body["primaryKey"],
        "an update keeps the keys"
    );

    let shown = arm.call("GET", &rule, &arm.token_b, None).await;
    assert_eq!(shown.status, 200);
    assert_eq!(
        shown.body["properties"]["rights"],
        json!(["Listen", "Send"])
    );
    let listed = arm
        .call(
            "GET",
            &format!("{namespace}/authorizationRules"),
            &arm.token_b,
            None,
        )
        .await;
    assert_eq!(listed.body["value"].as_array().unwrap().len(), 2);

    assert_eq!(
        arm.call("DELETE", &rule, &arm.token_b, None).await.status,
        200
    );
    let gone = arm.call("GET", &rule, &arm.token_b, None).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.code(), "ResourceNotFound");
    assert_eq!(
        arm.call("DELETE", &rule, &arm.token_b, None).await.status,
        204
    );
    let keys = arm
        .call("POST", &format!("{rule}/listKeys"), &arm.token_b, None)
        .await;
    assert_eq!(keys.status, 404);
}

#[tokio::test]
async fn regenerate_keys_replaces_one_key() {
    let arm = Arm::start().await;
    let namespace = namespace_in_tenant_b(&arm).await;
    let rule = format!("{namespace}/authorizationRules/RootManageSharedAccessKey");
    let before = arm
        .call("POST", &format!("{rule}/listKeys"), &arm.token_b, None)
        .await;

    let regenerated = arm
        .call(
            "POST",
            &format!("{rule}/regenerateKeys"),
            &arm.token_b,
            Some(json!({"keyType": "PrimaryKey"})),
        )
        .await;
    assert_eq!(regenerated.status, 200);
    assert_ne!(regenerated.body["primaryKey"], before.body["primaryKey"]);
    assert_eq!(
        regenerated.body["secondaryKey"],
        before.body["secondaryKey"]
    );
    let listed = arm
        .call("POST", &format!("{rule}/listKeys"), &arm.token_b, None)
        .await;
    assert_eq!(listed.body["primaryKey"], regenerated.body["primaryKey"]);

    let chosen_key = STANDARD.encode([7u8; 32]);
    let set = arm
        .call(
            "POST",
            &format!("{rule}/regenerateKeys"),
            &arm.token_b,
            Some(json!({"keyType": "SecondaryKey", "key": chosen_key})),
        )
        .await;
    assert_eq!(set.body["secondaryKey"], chosen_key.as_str());
    assert_eq!(set.body["primaryKey"], regenerated.body["primaryKey"]);

    let invalid = arm
        .call(
            "POST",
            &format!("{rule}/regenerateKeys"),
            &arm.token_b,
            Some(json!({"keyType": "TertiaryKey"})),
        )
        .await;
    assert_eq!(invalid.status, 400);
    assert_eq!(invalid.code(), "InvalidRequestContent");
}

#[tokio::test]
async fn authorization_rule_validation() {
    let arm = Arm::start().await;
    let namespace = namespace_in_tenant_b(&arm).await;
    let rule = |name: &str| format!("{namespace}/authorizationRules/{name}");

    let cases = [
        (
            "manage-alone",
            Some(rights_body(&["Manage"])),
            400,
            "BadRequest",
        ),
        (
            "unknown-right",
            Some(rights_body(&["Read"])),
            400,
            "BadRequest",
        ),
        ("no-rights", Some(rights_body(&[])), 400, "BadRequest"),
        ("no-body", None, 400, "InvalidRequestContent"),
        ("bad name!", Some(rights_body(&["Send"])), 400, "BadRequest"),
    ];
    for (name, body, status, code) in cases {
        let reply = arm.call("PUT", &rule(name), &arm.token_b, body).await;
        assert_eq!(reply.status, status, "{name}: {}", reply.body);
        assert_eq!(reply.code(), code, "{name}");
    }

    for index in 1..12 {
        let reply = arm
            .call(
                "PUT",
                &rule(&format!("rule{index}")),
                &arm.token_b,
                Some(rights_body(&["Send"])),
            )
            .await;
        assert_eq!(reply.status, 200, "rule {index}: {}", reply.body);
    }
    let thirteenth = arm
        .call(
            "PUT",
            &rule("rule12"),
            &arm.token_b,
            Some(rights_body(&["Send"])),
        )
        .await;
    assert_eq!(thirteenth.status, 400);
    assert!(thirteenth.message().contains("12 authorization rules"));

    let wrong_tenant = arm
        .call(
            "POST",
            &format!("{}/listKeys", rule("RootManageSharedAccessKey")),
            &arm.token_a,
            None,
        )
        .await;
    assert_eq!(wrong_tenant.status, 401);
    let unknown_action = arm
        .call(
            "POST",
            &format!("{}/rotate", rule("RootManageSharedAccessKey")),
            &arm.token_b,
            None,
        )
        .await;
    assert_eq!(unknown_action.code(), "InvalidResourceType");
}

#[tokio::test]
async fn basic_credentials_are_an_invalid_header() {
    let arm = Arm::start().await;
    let url = format!("{}/subscriptions?api-version=2022-12-01", arm.server.uri());
    let response = arm
        .http
        .get(url)
        .basic_auth("user", Some("password"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "AuthenticationFailed");
    assert_eq!(
        body["error"]["message"],
        "Authentication failed. The 'Authorization' header is provided in an invalid format."
    );
}

#[tokio::test]
async fn body_over_four_megabytes_is_rejected() {
    let arm = Arm::start().await;
    let group = arm.group_path(&arm.subscription_a, "rg-big");
    let tag = "x".repeat(5 * 1024 * 1024);
    let body = json!({"location": "eastus", "tags": {"big": tag}}).to_string();
    let reply = arm
        .send(
            "PUT",
            &format!("{group}?api-version=2024-11-01"),
            Some(&arm.token_a),
            Some(body),
        )
        .await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.body["error"]["code"], "RequestContentTooLarge");
    assert_eq!(
        reply.body["error"]["message"],
        "The request content size exceeds the maximum size of 4 MB."
    );
}
