//! Entra ID directory objects: tenants, subscriptions and service principals.

use std::sync::Arc;

use time::OffsetDateTime;

use super::ids::{ClientId, ObjectId, ResourceId, SubscriptionId, TenantId};
use crate::crypto::SigningKey;

/// A Microsoft Entra tenant with the key that signs its access tokens.
#[derive(Debug)]
pub struct Tenant {
    /// Short name used by scenarios (`a`, `b`).
    pub name: String,
    pub id: TenantId,
    pub display_name: String,
    pub default_domain: String,
    pub signing_key: Arc<SigningKey>,
}

/// An Azure subscription, trusted by exactly one tenant.
#[derive(Clone, Debug)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub tenant: TenantId,
    pub display_name: String,
}

impl Subscription {
    pub fn resource_id(&self) -> ResourceId {
        ResourceId::new(format!("/subscriptions/{}", self.id))
    }
}

/// How a service principal authenticates and what it stands for.
#[derive(Clone, Debug)]
pub enum PrincipalKind {
    /// An application with a client secret: each tenant's operator, who runs provisioning.
    Application { secret: String },
    /// The service principal behind a user-assigned managed identity. It has no secret and
    /// gets tokens only through federated identity credentials.
    ManagedIdentity { resource_id: ResourceId },
}

/// A service principal in one tenant. A managed identity is a principal of its own tenant only.
#[derive(Clone, Debug)]
pub struct Principal {
    pub object_id: ObjectId,
    pub client_id: ClientId,
    pub tenant: TenantId,
    pub display_name: String,
    pub kind: PrincipalKind,
    pub created_at: OffsetDateTime,
}

impl Principal {
    pub fn secret(&self) -> Option<&str> {
        match &self.kind {
            PrincipalKind::Application { secret } => Some(secret),
            PrincipalKind::ManagedIdentity { .. } => None,
        }
    }
}
