//! The in-memory model of Azure that every fake reads and writes, with no I/O.
//!
//! One [`Cloud`] contains any number of tenants. A role assignment created through the ARM fake
//! is what the Service Bus fake checks, and a federated identity credential created through
//! ARM is what the token endpoint matches, because both read this one model.

mod clock;
mod directory;
pub mod faults;
mod ids;
pub mod rbac;
mod resources;
pub mod sas;
pub mod servicebus;
mod tokens;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use time::OffsetDateTime;

pub use clock::{Clock, Delays};
pub use directory::{Principal, PrincipalKind, Subscription, Tenant};
pub use ids::{ClientId, ObjectId, ResourceId, SubscriptionId, TenantId};
pub use rbac::{RoleAssignment, RoleDefinition};
pub use resources::{
    ClusterIssuer, FederatedCredential, ManagedCluster, ProvisioningState, ResourceGroup,
    UserAssignedIdentity,
};
pub use servicebus::{Namespace, Queue, QueueProperties};
pub use tokens::{
    ARM_AUDIENCES, AccessTokenClaims, IssuedToken, SERVICEBUS_AUDIENCE, TokenRejection,
    known_resource,
};

use crate::crypto::{SigningKey, pooled_key};

/// The model shared by the fakes. Responders hold the lock only for the length of one request.
pub type SharedCloud = Arc<Mutex<Cloud>>;

/// Locks a shared model, recovering it if a thread panicked while holding the lock.
pub fn lock(cloud: &SharedCloud) -> MutexGuard<'_, Cloud> {
    cloud
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Azure as the fakes see it.
#[derive(Debug, Default)]
pub struct Cloud {
    pub clock: Clock,
    pub delays: Delays,
    /// Faults the Service Bus broker injects; empty unless a test adds some.
    pub amqp_faults: faults::AmqpFaults,
    pub tenants: Vec<Tenant>,
    pub subscriptions: Vec<Subscription>,
    pub principals: Vec<Principal>,
    pub resource_groups: BTreeMap<String, ResourceGroup>,
    pub clusters: BTreeMap<String, ManagedCluster>,
    pub issuers: Vec<ClusterIssuer>,
    pub identities: BTreeMap<String, UserAssignedIdentity>,
    pub federated_credentials: BTreeMap<String, FederatedCredential>,
    pub role_assignments: BTreeMap<String, RoleAssignment>,
    /// Namespaces by lower-cased name, unique across subscriptions.
    pub namespaces: BTreeMap<String, Namespace>,
    keys_taken: usize,
}

impl Cloud {
    /// A cloud with one tenant per name, each with one subscription and an operator
    /// application that has Owner on that subscription.
    pub fn with_tenants(names: &[&str]) -> Self {
        let mut cloud = Cloud::default();
        for name in names {
            cloud.add_tenant(name);
        }
        cloud
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Takes the next signing key from the process-wide pool.
    pub fn take_key(&mut self) -> Arc<SigningKey> {
        let key = pooled_key(self.keys_taken);
        self.keys_taken += 1;
        key
    }

    /// Adds a tenant named `name` with a subscription and an operator principal.
    pub fn add_tenant(&mut self, name: &str) -> TenantId {
        let id = TenantId::random();
        let upper = name.to_ascii_uppercase();
        let signing_key = self.take_key();
        self.tenants.push(Tenant {
            name: name.to_owned(),
            id: id.clone(),
            display_name: format!("Tenant {upper}"),
            default_domain: format!("tenant{}.onmicrosoft.com", name.to_ascii_lowercase()),
            signing_key,
        });
        let subscription = Subscription {
            id: SubscriptionId::random(),
            tenant: id.clone(),
            display_name: format!("Subscription {upper}"),
        };
        let now = self.now();
        let operator = Principal {
            object_id: ObjectId::random(),
            client_id: ClientId::random(),
            tenant: id.clone(),
            display_name: format!("xtenant-operator-{name}"),
            kind: PrincipalKind::Application {
                secret: random_secret(),
            },
            created_at: now,
        };
        let scope = subscription.resource_id();
        // Seeded before any scenario step, so it is in effect whatever the delays.
        self.assign_role(&operator.object_id, "Owner", &scope);
        self.subscriptions.push(subscription);
        self.principals.push(operator);
        id
    }

    /// Looks a tenant up by id (any case) or by its scenario name.
    pub fn tenant(&self, id_or_name: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| {
            t.id.as_str().eq_ignore_ascii_case(id_or_name)
                || t.name == id_or_name
                || t.default_domain.eq_ignore_ascii_case(id_or_name)
        })
    }

    pub fn subscription(&self, id: &str) -> Option<&Subscription> {
        self.subscriptions
            .iter()
            .find(|s| s.id.as_str().eq_ignore_ascii_case(id))
    }

    /// Returns the subscriptions whose tenant is `tenant`.
    pub fn subscriptions_of(&self, tenant: &TenantId) -> Vec<&Subscription> {
        self.subscriptions
            .iter()
            .filter(|s| &s.tenant == tenant)
            .collect()
    }

    /// Returns the operator application of a tenant.
    pub fn operator(&self, tenant: &TenantId) -> Option<&Principal> {
        self.principals
            .iter()
            .find(|p| &p.tenant == tenant && matches!(p.kind, PrincipalKind::Application { .. }))
    }

    pub fn principal(&self, object_id: &ObjectId) -> Option<&Principal> {
        self.principals.iter().find(|p| {
            p.object_id
                .as_str()
                .eq_ignore_ascii_case(object_id.as_str())
        })
    }

    /// Finds a principal by client id within one tenant: client ids of other tenants are
    /// not visible there.
    pub fn principal_by_client_id(&self, tenant: &TenantId, client_id: &str) -> Option<&Principal> {
        self.principals
            .iter()
            .find(|p| &p.tenant == tenant && p.client_id.as_str().eq_ignore_ascii_case(client_id))
    }

    pub fn issuer(&self, url: &str) -> Option<&ClusterIssuer> {
        self.issuers.iter().find(|i| i.url == url)
    }

    pub fn issuer_mut(&mut self, url: &str) -> Option<&mut ClusterIssuer> {
        self.issuers.iter_mut().find(|i| i.url == url)
    }

    pub fn identity_by_principal(&self, object_id: &ObjectId) -> Option<&UserAssignedIdentity> {
        self.identities
            .values()
            .find(|i| &i.principal_id == object_id)
    }

    /// Federated credentials of an identity that are in effect now, after propagation.
    pub fn effective_credentials(&self, identity: &ResourceId) -> Vec<&FederatedCredential> {
        let now = self.now();
        self.federated_credentials
            .values()
            .filter(|f| {
                &f.identity == identity && f.created_at + self.delays.fic_propagation <= now
            })
            .collect()
    }

    /// Role assignments of a principal that apply at `scope` and are in effect now.
    pub fn effective_assignments(
        &self,
        principal: &ObjectId,
        scope: &ResourceId,
    ) -> Vec<&RoleAssignment> {
        let now = self.now();
        self.role_assignments
            .values()
            .filter(|a| &a.principal_id == principal)
            .filter(|a| a.scope.contains(scope))
            .filter(|a| a.created_at + self.delays.role_assignment_propagation <= now)
            .collect()
    }

    /// Checks whether a principal may perform a control-plane action at `scope`.
    pub fn has_action(&self, principal: &ObjectId, scope: &ResourceId, action: &str) -> bool {
        self.effective_assignments(principal, scope)
            .iter()
            .filter_map(|a| a.role())
            .any(|role| role.allows_action(action))
    }

    /// Checks whether a principal may perform a data action (Service Bus send or receive) at `scope`.
    pub fn has_data_action(&self, principal: &ObjectId, scope: &ResourceId, action: &str) -> bool {
        self.effective_assignments(principal, scope)
            .iter()
            .filter_map(|a| a.role())
            .any(|role| role.allows_data_action(action))
    }

    /// Finds the namespace whose host name is `host` (`{name}.servicebus.windows.net`).
    pub fn namespace_by_host(&self, host: &str) -> Option<&Namespace> {
        let name = host
            .split(':')
            .next()?
            .strip_suffix(servicebus::SERVICEBUS_HOST_SUFFIX)?;
        self.namespaces.get(&name.to_ascii_lowercase())
    }

    pub fn namespace_by_host_mut(&mut self, host: &str) -> Option<&mut Namespace> {
        let name = host
            .split(':')
            .next()?
            .strip_suffix(servicebus::SERVICEBUS_HOST_SUFFIX)?;
        self.namespaces.get_mut(&name.to_ascii_lowercase())
    }

    /// Creates a user-assigned managed identity and the service principal behind it, in
    /// `tenant`, with fresh client and object ids.
    pub fn create_user_assigned_identity(
        &mut self,
        id: ResourceId,
        tenant: &TenantId,
        location: &str,
    ) -> UserAssignedIdentity {
        let now = self.now();
        let identity = UserAssignedIdentity {
            id: id.clone(),
            tenant: tenant.clone(),
            location: location.to_owned(),
            tags: serde_json::Value::Object(Default::default()),
            principal_id: ObjectId::random(),
            client_id: ClientId::random(),
            created_at: now,
        };
        self.principals.push(Principal {
            object_id: identity.principal_id.clone(),
            client_id: identity.client_id.clone(),
            tenant: tenant.clone(),
            display_name: id.name().to_owned(),
            kind: PrincipalKind::ManagedIdentity {
                resource_id: id.clone(),
            },
            created_at: now,
        });
        self.identities.insert(id.key(), identity.clone());
        identity
    }

    /// Assigns the built-in role `role` to a service principal at `scope`, in effect at once
    /// (created at the epoch, so no propagation delay applies), and returns the assignment.
    /// Panics when `role` is not a built-in role name.
    pub fn assign_role(
        &mut self,
        principal: &ObjectId,
        role: &str,
        scope: &ResourceId,
    ) -> RoleAssignment {
        let role = RoleDefinition::by_name(role)
            .unwrap_or_else(|| panic!("'{role}' is not a built-in role"));
        let id = scope.join(&format!(
            "providers/Microsoft.Authorization/roleAssignments/{}",
            uuid::Uuid::new_v4()
        ));
        let assignment = RoleAssignment {
            id: id.clone(),
            scope: scope.clone(),
            role_definition_id: role.id.to_owned(),
            principal_id: principal.clone(),
            principal_type: "ServicePrincipal".into(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            created_by: principal.clone(),
        };
        self.role_assignments.insert(id.key(), assignment.clone());
        assignment
    }

    /// Adds a federated identity credential named `name` to an identity, created now.
    pub fn add_federated_credential(
        &mut self,
        identity: &ResourceId,
        name: &str,
        issuer: &str,
        subject: &str,
        audience: &str,
    ) {
        let id = identity.join(&format!("federatedIdentityCredentials/{name}"));
        let credential = FederatedCredential {
            id: id.clone(),
            identity: identity.clone(),
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
            audiences: vec![audience.to_owned()],
            created_at: self.now(),
        };
        self.federated_credentials.insert(id.key(), credential);
    }

    /// Deletes everything inside `scope`: resources, the principals of deleted identities,
    /// their federated credentials, and role assignments whose scope lies inside.
    pub fn delete_within(&mut self, scope: &ResourceId) {
        let removed_identities: Vec<UserAssignedIdentity> = self
            .identities
            .values()
            .filter(|i| scope.contains(&i.id))
            .cloned()
            .collect();
        for identity in &removed_identities {
            self.identities.remove(&identity.id.key());
            self.principals
                .retain(|p| p.object_id != identity.principal_id);
            self.federated_credentials
                .retain(|_, f| f.identity != identity.id);
        }
        let removed_issuers: Vec<String> = self
            .clusters
            .values()
            .filter(|c| scope.contains(&c.id))
            .filter_map(|c| c.issuer_url.clone())
            .collect();
        self.issuers.retain(|i| !removed_issuers.contains(&i.url));
        self.clusters.retain(|_, c| !scope.contains(&c.id));
        self.namespaces.retain(|_, n| !scope.contains(&n.id));
        self.federated_credentials
            .retain(|_, f| !scope.contains(&f.id));
        self.role_assignments
            .retain(|_, a| !scope.contains(&a.scope));
        self.resource_groups.retain(|_, g| !scope.contains(&g.id));
    }
}

/// Generates a client secret in the shape Entra uses: 40 URL-safe characters.
fn random_secret() -> String {
    let mut bytes = [0u8; 30];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_get_subscription_and_operator_with_owner() {
        let cloud = Cloud::with_tenants(&["a", "b"]);
        let a = cloud.tenant("a").unwrap();
        let subscription = cloud.subscriptions_of(&a.id)[0];
        let operator = cloud.operator(&a.id).unwrap();
        let group = subscription.resource_id().join("resourceGroups/rg");
        assert!(cloud.has_action(
            &operator.object_id,
            &group,
            "Microsoft.Resources/subscriptions/resourceGroups/write"
        ));
        let b = cloud.tenant("b").unwrap();
        let other = cloud.subscriptions_of(&b.id)[0].resource_id();
        assert!(!cloud.has_action(
            &operator.object_id,
            &other,
            "Microsoft.Resources/subscriptions/resourceGroups/read"
        ));
    }

    #[test]
    fn client_ids_are_scoped_to_their_tenant() {
        let cloud = Cloud::with_tenants(&["a", "b"]);
        let a = cloud.tenant("a").unwrap().id.clone();
        let b = cloud.tenant("b").unwrap().id.clone();
        let operator_a = cloud.operator(&a).unwrap().client_id.clone();
        assert!(
            cloud
                .principal_by_client_id(&a, operator_a.as_str())
                .is_some()
        );
        assert!(
            cloud
                .principal_by_client_id(&b, operator_a.as_str())
                .is_none()
        );
    }
}
