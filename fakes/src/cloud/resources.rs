//! ARM resources other than Service Bus entities: resource groups, AKS clusters with their
//! OIDC issuers, user-assigned managed identities and federated identity credentials.

use std::sync::Arc;

use serde_json::Value;
use time::OffsetDateTime;

use super::ids::{ClientId, ObjectId, ResourceId, SubscriptionId, TenantId};
use crate::crypto::SigningKey;

/// Provisioning state of a resource whose creation or deletion runs on the model's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvisioningState {
    Succeeded,
    Deleting,
}

#[derive(Clone, Debug)]
pub struct ResourceGroup {
    pub id: ResourceId,
    pub name: String,
    pub subscription: SubscriptionId,
    pub location: String,
    pub tags: Value,
    pub state: ProvisioningState,
}

/// An AKS cluster (`Microsoft.ContainerService/managedClusters`).
#[derive(Clone, Debug)]
pub struct ManagedCluster {
    pub id: ResourceId,
    pub tenant: TenantId,
    pub location: String,
    /// The `properties` object as the client sent it, completed with server defaults.
    pub properties: Value,
    pub identity_principal: ObjectId,
    /// The OIDC issuer URL when the issuer is enabled; it ends with `/` as AKS's do.
    pub issuer_url: Option<String>,
    pub workload_identity: bool,
    pub created_at: OffsetDateTime,
    /// When the cluster's creation finishes on the model's clock.
    pub ready_at: OffsetDateTime,
}

/// A cluster's service-account token issuer: the OIDC discovery document and JWKS that Entra
/// fetches when it validates a federated assertion.
#[derive(Clone, Debug)]
pub struct ClusterIssuer {
    pub url: String,
    pub tenant: TenantId,
    /// Signing keys, the active one first; older keys stay published until removed.
    pub keys: Vec<Arc<SigningKey>>,
    /// When false the discovery document and JWKS cannot be fetched, as when the issuer's
    /// storage is private or deleted.
    pub reachable: bool,
}

impl ClusterIssuer {
    pub fn active_key(&self) -> &Arc<SigningKey> {
        &self.keys[0]
    }

    /// The JWKS URI published in the discovery document (`{issuer}openid/v1/jwks`).
    pub fn jwks_uri(&self) -> String {
        format!("{}openid/v1/jwks", self.url)
    }
}

/// A user-assigned managed identity (`Microsoft.ManagedIdentity/userAssignedIdentities`).
#[derive(Clone, Debug)]
pub struct UserAssignedIdentity {
    pub id: ResourceId,
    pub tenant: TenantId,
    pub location: String,
    pub tags: Value,
    pub principal_id: ObjectId,
    pub client_id: ClientId,
    pub created_at: OffsetDateTime,
}

/// A federated identity credential on a user-assigned identity.
#[derive(Clone, Debug)]
pub struct FederatedCredential {
    pub id: ResourceId,
    pub identity: ResourceId,
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    pub created_at: OffsetDateTime,
}

impl FederatedCredential {
    pub fn name(&self) -> &str {
        self.id.name()
    }
}
