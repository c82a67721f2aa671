//! Long-running operations on the model's clock.
//!
//! ARM reports an asynchronous operation in one of two ways, and the fake uses each where
//! Azure does. AKS returns `Azure-AsyncOperation` on a PUT, a status URL that returns
//! `InProgress` and then `Succeeded`. A resource group DELETE returns 202 with `Location`,
//! a URL that returns 202 while the deletion runs and 200 once it is done. Every operation
//! lasts `Cloud::delays.operation_duration` (zero by default) and carries `Retry-After: 1`.
//!
//! A deletion takes effect at the first ARM request after its end time, or at once when the
//! duration is zero.
// NOTE: with a non-zero duration the Service Bus and Entra fakes keep seeing the deleted
// resources until the next ARM request settles the deletion.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::response::timestamp;
use crate::cloud::{Cloud, PrincipalKind, ProvisioningState, ResourceId};

/// The effect of an operation when it ends.
#[derive(Clone, Debug)]
pub enum OperationKind {
    /// A cluster creation: its state derives from the cluster's own `ready_at`.
    CreateCluster,
    /// A deletion of everything within `scope`.
    Delete { scope: ResourceId },
}

#[derive(Clone, Debug)]
pub struct Operation {
    pub id: String,
    pub started_at: OffsetDateTime,
    pub ready_at: OffsetDateTime,
    pub kind: OperationKind,
    /// Whether a deletion has been applied to the model.
    applied: bool,
}

impl Operation {
    pub fn finished(&self, now: OffsetDateTime) -> bool {
        now >= self.ready_at
    }

    /// The body of an `Azure-AsyncOperation` status URL, as AKS returns it.
    pub fn status_body(&self, now: OffsetDateTime) -> Value {
        if self.finished(now) {
            json!({
                "name": self.id,
                "status": "Succeeded",
                "startTime": timestamp(self.started_at),
                "endTime": timestamp(self.ready_at),
            })
        } else {
            json!({"name": self.id, "status": "InProgress", "startTime": timestamp(self.started_at)})
        }
    }
}

/// The operations the fake ARM has started, by id.
#[derive(Debug, Default)]
pub struct Operations {
    operations: BTreeMap<String, Operation>,
}

impl Operations {
    /// Starts an operation that ends `cloud.delays.operation_duration` from now. A deletion
    /// of zero duration is applied before this returns.
    pub fn start(&mut self, cloud: &mut Cloud, kind: OperationKind) -> Operation {
        let now = cloud.now();
        let mut operation = Operation {
            id: uuid::Uuid::new_v4().to_string(),
            started_at: now,
            ready_at: now + cloud.delays.operation_duration,
            kind,
            applied: false,
        };
        if let OperationKind::Delete { scope } = &operation.kind {
            if operation.finished(now) {
                delete_scope(cloud, scope);
                operation.applied = true;
            } else if let Some(group) = cloud.resource_groups.get_mut(&scope.key()) {
                group.state = ProvisioningState::Deleting;
            }
        }
        self.operations
            .insert(operation.id.clone(), operation.clone());
        operation
    }

    pub fn get(&self, id: &str) -> Option<&Operation> {
        self.operations.get(&id.to_ascii_lowercase())
    }

    /// Checks whether a deletion that covers `id` is running.
    pub fn deleting(&self, id: &ResourceId) -> bool {
        self.operations
            .values()
            .any(|operation| match &operation.kind {
                OperationKind::Delete { scope } => !operation.applied && scope.contains(id),
                OperationKind::CreateCluster => false,
            })
    }

    /// Applies the deletions whose end time has passed on the model's clock.
    pub fn settle(&mut self, cloud: &mut Cloud) {
        let now = cloud.now();
        for operation in self.operations.values_mut() {
            if let OperationKind::Delete { scope } = &operation.kind
                && !operation.applied
                && operation.finished(now)
            {
                delete_scope(cloud, scope);
                operation.applied = true;
            }
        }
    }
}

/// Deletes everything within `scope`, including the principals of cluster identities, which
/// `Cloud::delete_within` does not know about.
fn delete_scope(cloud: &mut Cloud, scope: &ResourceId) {
    cloud.principals.retain(|principal| match &principal.kind {
        PrincipalKind::ManagedIdentity { resource_id } => !scope.contains(resource_id),
        PrincipalKind::Application { .. } => true,
    });
    cloud.delete_within(scope);
}

/// `Azure-AsyncOperation` URL of an AKS operation.
pub fn async_operation_url(arm: &str, subscription: &str, location: &str, id: &str) -> String {
    format!(
        "{arm}/subscriptions/{subscription}/providers/Microsoft.ContainerService/locations/\
         {location}/operations/{id}?api-version=2016-03-30"
    )
}

/// `Location` URL of a resource group deletion.
pub fn operation_result_url(arm: &str, subscription: &str, id: &str, api_version: &str) -> String {
    format!("{arm}/subscriptions/{subscription}/operationresults/{id}?api-version={api_version}")
}
