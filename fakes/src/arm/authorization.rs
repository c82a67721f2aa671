//! `Microsoft.Authorization`: built-in role definitions and role assignments at any scope.
//!
//! The scope is the path before `/providers/Microsoft.Authorization/`. A role assignment may
//! name only a principal of the scope's tenant. A managed identity becomes visible to RBAC
//! `Cloud::delays.identity_replication` after its creation, unless the request sets
//! `principalType`, which makes ARM skip the directory lookup as Azure documents.

use serde_json::{Value, json};

use super::errors::ArmError;
use super::response::{ArmResponse, timestamp};
use super::{Context, json_type};
use crate::cloud::{
    ObjectId, PrincipalKind, ResourceId, RoleAssignment, RoleDefinition, rbac::BUILT_IN_ROLES,
};

const ROLE_DEFINITION_READ: &str = "Microsoft.Authorization/roleDefinitions/read";
const ROLE_ASSIGNMENT_READ: &str = "Microsoft.Authorization/roleAssignments/read";
const ROLE_ASSIGNMENT_WRITE: &str = "Microsoft.Authorization/roleAssignments/write";
const ROLE_ASSIGNMENT_DELETE: &str = "Microsoft.Authorization/roleAssignments/delete";

/// `{scope}/providers/Microsoft.Authorization/roleDefinitions[/{id}]`, with
/// `$filter=roleName eq '{name}'` or `type eq '{type}'` on the list.
pub fn role_definitions(
    context: &mut Context<'_>,
    scope: &ResourceId,
    name: Option<&str>,
) -> Result<ArmResponse, ArmError> {
    if context.method() != "GET" {
        return Err(context.method_not_allowed());
    }
    // Built-in definitions at the root scope are readable by any signed-in caller.
    let subscription_scope = scope.subscription().map(|s| format!("/subscriptions/{s}"));
    if subscription_scope.is_some() {
        context.authorize(scope, ROLE_DEFINITION_READ)?;
    }
    let definition_scope = subscription_scope.unwrap_or_default();

    if let Some(id) = name {
        let definition = RoleDefinition::by_id(id)
            .ok_or_else(|| ArmError::role_definition_does_not_exist(404, id))?;
        return Ok(ArmResponse::json(200, definition.to_arm(&definition_scope)));
    }

    let filter = crate::http::query(context.request).remove("$filter");
    let matches: Box<dyn Fn(&RoleDefinition) -> bool> = match filter.as_deref().map(str::trim) {
        None | Some("") => Box::new(|_| true),
        Some(filter) => {
            if let Some(name) = quoted_argument(filter, "roleName eq") {
                Box::new(move |d| d.name == name)
            } else if let Some(kind) = quoted_argument(filter, "type eq") {
                let built_in = kind.eq_ignore_ascii_case("BuiltInRole");
                Box::new(move |_| built_in)
            } else {
                return Err(unsupported_filter(filter));
            }
        }
    };
    let items = BUILT_IN_ROLES
        .iter()
        .filter(|d| matches(d))
        .map(|d| d.to_arm(&definition_scope))
        .collect();
    Ok(ArmResponse::list(items))
}

/// `{scope}/providers/Microsoft.Authorization/roleAssignments[/{name}]`.
pub fn role_assignments(
    context: &mut Context<'_>,
    scope: &ResourceId,
    name: Option<&str>,
) -> Result<ArmResponse, ArmError> {
    match (context.method(), name) {
        ("GET", None) => list_assignments(context, scope),
        ("GET", Some(name)) => {
            context.authorize(scope, ROLE_ASSIGNMENT_READ)?;
            let id = assignment_id(scope, name);
            let assignment = context
                .cloud
                .role_assignments
                .get(&id.key())
                .ok_or_else(|| ArmError::role_assignment_not_found(name))?;
            Ok(ArmResponse::json(200, assignment_json(assignment)))
        }
        ("PUT", Some(name)) => put_assignment(context, scope, name),
        ("DELETE", Some(name)) => {
            context.authorize(scope, ROLE_ASSIGNMENT_DELETE)?;
            match context
                .cloud
                .role_assignments
                .remove(&assignment_id(scope, name).key())
            {
                Some(removed) => Ok(ArmResponse::json(200, assignment_json(&removed))),
                None => Ok(ArmResponse::empty(204)),
            }
        }
        _ => Err(context.method_not_allowed()),
    }
}

fn assignment_id(scope: &ResourceId, name: &str) -> ResourceId {
    scope.join(&format!(
        "providers/Microsoft.Authorization/roleAssignments/{name}"
    ))
}

/// Lists assignments that apply at, above or below `scope`. `atScope()` keeps those at or
/// above it; `principalId eq '{id}'` and `assignedTo('{id}')` keep one principal's.
fn list_assignments(
    context: &mut Context<'_>,
    scope: &ResourceId,
) -> Result<ArmResponse, ArmError> {
    context.authorize(scope, ROLE_ASSIGNMENT_READ)?;
    let filter = crate::http::query(context.request)
        .remove("$filter")
        .unwrap_or_default();
    let mut at_scope = false;
    let mut principal: Option<String> = None;
    for term in filter
        .split(" and ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        if term.eq_ignore_ascii_case("atScope()") {
            at_scope = true;
        } else if let Some(id) = quoted_argument(term, "principalId eq") {
            principal = Some(id);
        } else if let Some(id) = term
            .strip_prefix("assignedTo(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|arg| arg.strip_prefix('\'')?.strip_suffix('\''))
        {
            principal = Some(id.to_owned());
        } else {
            return Err(unsupported_filter(&filter));
        }
    }

    let subscription = scope.subscription();
    let items = context
        .cloud
        .role_assignments
        .values()
        .filter(|a| subscription.is_none() || a.scope.subscription() == subscription)
        .filter(|a| a.scope.contains(scope) || (!at_scope && scope.contains(&a.scope)))
        .filter(|a| {
            principal
                .as_deref()
                .is_none_or(|p| a.principal_id.as_str().eq_ignore_ascii_case(p))
        })
        .map(assignment_json)
        .collect();
    Ok(ArmResponse::list(items))
}

/// Creates a role assignment (201) after checking the name, the role, the principal and
/// duplicates, in that order.
fn put_assignment(
    context: &mut Context<'_>,
    scope: &ResourceId,
    name: &str,
) -> Result<ArmResponse, ArmError> {
    context.authorize(scope, ROLE_ASSIGNMENT_WRITE)?;
    let body = context.body()?;
    if uuid::Uuid::parse_str(name).is_err() {
        return Err(ArmError::invalid_role_assignment_id(name));
    }
    let properties = body
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let text = |key: &str| -> Result<String, ArmError> {
        match properties.get(key) {
            Some(Value::String(value)) if !value.is_empty() => Ok(value.clone()),
            None | Some(Value::Null) => Err(ArmError::invalid_request_content(format!(
                "Required property '{key}' not found in JSON"
            ))),
            Some(other) => Err(ArmError::invalid_request_content(format!(
                "property '{key}' must be a non-empty string, found {}",
                json_type(other)
            ))),
        }
    };
    let role_definition_id = text("roleDefinitionId")?;
    let principal_id = ObjectId::new(text("principalId")?);
    let principal_type = properties
        .get("principalType")
        .and_then(Value::as_str)
        .map(str::to_owned);

    let role = RoleDefinition::by_id(&role_definition_id).ok_or_else(|| {
        let guid = role_definition_id
            .rsplit('/')
            .next()
            .unwrap_or(&role_definition_id);
        ArmError::role_definition_does_not_exist(400, guid)
    })?;
    check_principal(context, &principal_id, principal_type.is_some())?;

    let id = assignment_id(scope, name);
    let same_grant = |a: &RoleAssignment| {
        a.principal_id
            .as_str()
            .eq_ignore_ascii_case(principal_id.as_str())
            && a.role().is_some_and(|r| r.id == role.id)
            && &a.scope == scope
    };
    if let Some(existing) = context.cloud.role_assignments.get(&id.key()) {
        if same_grant(existing) {
            return Ok(ArmResponse::json(200, assignment_json(existing)));
        }
        return Err(ArmError::role_assignment_update_not_permitted());
    }
    if let Some(existing) = context
        .cloud
        .role_assignments
        .values()
        .find(|a| same_grant(a))
    {
        return Err(ArmError::role_assignment_exists(existing.name()));
    }

    let subscription = scope
        .subscription()
        .map(|s| format!("/subscriptions/{s}"))
        .unwrap_or_default();
    let assignment = RoleAssignment {
        id: id.clone(),
        scope: scope.clone(),
        role_definition_id: format!(
            "{subscription}/providers/Microsoft.Authorization/roleDefinitions/{}",
            role.id
        ),
        principal_id,
        principal_type: principal_type.unwrap_or_else(|| "ServicePrincipal".to_owned()),
        created_at: context.cloud.now(),
        created_by: context.caller.object_id.clone(),
    };
    let response = assignment_json(&assignment);
    context.cloud.role_assignments.insert(id.key(), assignment);
    Ok(ArmResponse::json(201, response))
}

/// The principal must exist in the tenant of the assignment's subscription. A managed
/// identity younger than the replication delay is not found unless the request set
/// `principalType`.
fn check_principal(
    context: &Context<'_>,
    principal_id: &ObjectId,
    typed: bool,
) -> Result<(), ArmError> {
    let tenant = context
        .tenant
        .clone()
        .unwrap_or_else(|| context.caller.tenant.clone());
    let not_found = || ArmError::principal_not_found(principal_id.as_str(), tenant.as_str());
    let principal = context
        .cloud
        .principal(principal_id)
        .filter(|p| p.tenant == tenant)
        .ok_or_else(not_found)?;
    let replicating = matches!(principal.kind, PrincipalKind::ManagedIdentity { .. })
        && principal.created_at + context.cloud.delays.identity_replication > context.cloud.now();
    if replicating && !typed {
        return Err(not_found());
    }
    Ok(())
}

/// The quoted argument of `{prefix} '{value}'`, e.g. `roleName eq 'Reader'`.
fn quoted_argument(term: &str, prefix: &str) -> Option<String> {
    let rest = term
        .get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .map(|_| &term[prefix.len()..])?;
    let value = rest.trim().strip_prefix('\'')?.strip_suffix('\'')?;
    Some(value.replace("''", "'"))
}

/// NOTE: code and message are the fake's; ARM's answer to an unsupported `$filter` has not
/// been captured.
fn unsupported_filter(filter: &str) -> ArmError {
    ArmError::bad_request(format!("The $filter '{filter}' is not supported."))
}

fn assignment_json(assignment: &RoleAssignment) -> Value {
    // Assignments seeded with a bare GUID report the full definition id, as ARM does.
    let role_definition_id = if assignment.role_definition_id.contains('/') {
        assignment.role_definition_id.clone()
    } else {
        let subscription = assignment
            .scope
            .subscription()
            .map(|s| format!("/subscriptions/{s}"))
            .unwrap_or_default();
        format!(
            "{subscription}/providers/Microsoft.Authorization/roleDefinitions/{}",
            assignment.role_definition_id
        )
    };
    let created = timestamp(assignment.created_at);
    json!({
        "properties": {
            "roleDefinitionId": role_definition_id,
            "principalId": assignment.principal_id,
            "principalType": assignment.principal_type,
            "scope": assignment.scope.as_str(),
            "condition": null,
            "conditionVersion": null,
            "createdOn": created,
            "updatedOn": created,
            "createdBy": assignment.created_by,
            "updatedBy": assignment.created_by,
            "delegatedManagedIdentityResourceId": null,
            "description": null,
        },
        "id": assignment.id.as_str(),
        "type": "Microsoft.Authorization/roleAssignments",
        "name": assignment.name(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_argument_reads_odata_strings() {
        assert_eq!(
            quoted_argument("roleName eq 'Azure Service Bus Data Owner'", "roleName eq").as_deref(),
            Some("Azure Service Bus Data Owner")
        );
        assert_eq!(
            quoted_argument("rolename EQ 'it''s'", "roleName eq").as_deref(),
            Some("it's")
        );
        assert_eq!(quoted_argument("roleName eq Reader", "roleName eq"), None);
    }
}
