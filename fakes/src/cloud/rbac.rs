//! Azure RBAC: built-in role definitions and role assignments.
//!
//! Role definition ids are the built-in GUIDs, identical in every tenant (Azure built-in roles
//! documentation). Actions and data actions use `*` as a wildcard over any characters, as
//! Azure's permission strings do.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::ids::{ObjectId, ResourceId};

/// A built-in role definition.
#[derive(Debug)]
pub struct RoleDefinition {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub actions: &'static [&'static str],
    pub not_actions: &'static [&'static str],
    pub data_actions: &'static [&'static str],
}

/// Data action a Service Bus sender needs.
pub const SERVICEBUS_SEND: &str = "Microsoft.ServiceBus/namespaces/messages/send/action";
/// Data action a Service Bus receiver needs.
pub const SERVICEBUS_RECEIVE: &str = "Microsoft.ServiceBus/namespaces/messages/receive/action";

/// The built-in roles the fake knows.
pub const BUILT_IN_ROLES: &[RoleDefinition] = &[
    RoleDefinition {
        id: "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        name: "Owner",
        description: "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[],
        data_actions: &[],
    },
    RoleDefinition {
        id: "b24988ac-6180-42a0-ab88-20f7382dd24c",
        name: "Contributor",
        description: "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
        ],
        data_actions: &[],
    },
    RoleDefinition {
        id: "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        name: "Reader",
        description: "View all resources, but does not allow you to make any changes.",
        actions: &["*/read"],
        not_actions: &[],
        data_actions: &[],
    },
    RoleDefinition {
        id: "090c5cfd-751d-490a-894a-3ce6f1109419",
        name: "Azure Service Bus Data Owner",
        description: "Allows for full access to Azure Service Bus resources.",
        actions: &["Microsoft.ServiceBus/*"],
        not_actions: &[],
        data_actions: &["Microsoft.ServiceBus/*"],
    },
    RoleDefinition {
        id: "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39",
        name: "Azure Service Bus Data Sender",
        description: "Allows for send access to Azure Service Bus resources.",
        actions: &[
            "Microsoft.ServiceBus/*/queues/read",
            "Microsoft.ServiceBus/*/topics/read",
            "Microsoft.ServiceBus/*/topics/subscriptions/read",
        ],
        not_actions: &[],
        data_actions: &["Microsoft.ServiceBus/*/send/action"],
    },
    RoleDefinition {
        id: "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0",
        name: "Azure Service Bus Data Receiver",
        description: "Allows for receive access to Azure Service Bus resources.",
        actions: &[
            "Microsoft.ServiceBus/*/queues/read",
            "Microsoft.ServiceBus/*/topics/read",
            "Microsoft.ServiceBus/*/topics/subscriptions/read",
        ],
        not_actions: &[],
        data_actions: &["Microsoft.ServiceBus/*/receive/action"],
    },
];

impl RoleDefinition {
    /// Looks up a built-in role by its GUID, without regard to case.
    pub fn by_id(id: &str) -> Option<&'static RoleDefinition> {
        let guid = id.rsplit('/').next().unwrap_or(id);
        BUILT_IN_ROLES
            .iter()
            .find(|r| r.id.eq_ignore_ascii_case(guid))
    }

    /// Looks up a built-in role by its exact name.
    pub fn by_name(name: &str) -> Option<&'static RoleDefinition> {
        BUILT_IN_ROLES.iter().find(|r| r.name == name)
    }

    pub fn allows_action(&self, action: &str) -> bool {
        self.actions.iter().any(|p| permission_matches(p, action))
            && !self
                .not_actions
                .iter()
                .any(|p| permission_matches(p, action))
    }

    pub fn allows_data_action(&self, action: &str) -> bool {
        self.data_actions
            .iter()
            .any(|p| permission_matches(p, action))
    }

    /// The ARM representation under `scope` (`/subscriptions/{id}` for the CLI's lookups).
    pub fn to_arm(&self, scope: &str) -> Value {
        json!({
            "id": format!("{}/providers/Microsoft.Authorization/roleDefinitions/{}", scope.trim_end_matches('/'), self.id),
            "name": self.id,
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {
                "roleName": self.name,
                "type": "BuiltInRole",
                "description": self.description,
                "assignableScopes": ["/"],
                "permissions": [{
                    "actions": self.actions,
                    "notActions": self.not_actions,
                    "dataActions": self.data_actions,
                    "notDataActions": [],
                }],
                "createdOn": "2015-02-02T21:55:09.8806423Z",
                "updatedOn": "2021-11-11T20:13:47.8628684Z",
                "createdBy": null,
                "updatedBy": null,
            }
        })
    }
}

/// Matches an Azure permission pattern, where `*` stands for any characters, without regard
/// to case.
pub fn permission_matches(pattern: &str, action: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let action = action.to_ascii_lowercase();
    glob(pattern.as_bytes(), action.as_bytes())
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

/// A role assignment: a principal holds a role at a scope and every scope below it.
#[derive(Clone, Debug)]
pub struct RoleAssignment {
    pub id: ResourceId,
    pub scope: ResourceId,
    pub role_definition_id: String,
    pub principal_id: ObjectId,
    pub principal_type: String,
    pub created_at: OffsetDateTime,
    pub created_by: ObjectId,
}

impl RoleAssignment {
    pub fn role(&self) -> Option<&'static RoleDefinition> {
        RoleDefinition::by_id(&self.role_definition_id)
    }

    pub fn name(&self) -> &str {
        self.id.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_owner_grants_send_and_receive() {
        let owner = RoleDefinition::by_name("Azure Service Bus Data Owner").unwrap();
        assert!(owner.allows_data_action(SERVICEBUS_SEND));
        assert!(owner.allows_data_action(SERVICEBUS_RECEIVE));
    }

    #[test]
    fn sender_cannot_receive() {
        let sender = RoleDefinition::by_id("69a216fc-b8fb-44d8-bc22-1f3c2cd27a39").unwrap();
        assert!(sender.allows_data_action(SERVICEBUS_SEND));
        assert!(!sender.allows_data_action(SERVICEBUS_RECEIVE));
    }

    #[test]
    fn contributor_cannot_write_role_assignments() {
        let contributor = RoleDefinition::by_name("Contributor").unwrap();
        assert!(contributor.allows_action("Microsoft.ServiceBus/namespaces/write"));
        assert!(!contributor.allows_action("Microsoft.Authorization/roleAssignments/write"));
    }

    #[test]
    fn reader_reads_only() {
        let reader = RoleDefinition::by_name("Reader").unwrap();
        assert!(reader.allows_action("Microsoft.Resources/subscriptions/resourceGroups/read"));
        assert!(!reader.allows_action("Microsoft.Resources/subscriptions/resourceGroups/write"));
    }
}
