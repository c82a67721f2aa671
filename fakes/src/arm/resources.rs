//! `Microsoft.Resources`: cloud metadata, subscriptions, tenants and resource groups.

use serde_json::{Value, json};
use wiremock::Request;

use super::errors::ArmError;
use super::lro::{OperationKind, operation_result_url};
use super::response::{ArmResponse, RETRY_AFTER_SECONDS};
use super::{Context, Parent, required_location, tags};
use crate::cloud::{ProvisioningState, ResourceGroup, Subscription, SubscriptionId};
use crate::server::Endpoints;

const GROUP_READ: &str = "Microsoft.Resources/subscriptions/resourceGroups/read";
const GROUP_WRITE: &str = "Microsoft.Resources/subscriptions/resourceGroups/write";
const GROUP_DELETE: &str = "Microsoft.Resources/subscriptions/resourceGroups/delete";

/// Audience of ARM tokens in the public cloud, which the Azure CLI turns into its token scope.
const MANAGEMENT_AUDIENCE: &str = "https://management.core.windows.net/";

/// `GET /metadata/endpoints`, read by `az cloud register` unless `--skip-endpoint-discovery`.
/// The CLI needs `suffixes` to exist and reads `authentication.audiences[0]`.
pub fn metadata(request: &Request, endpoints: &Endpoints) -> Result<ArmResponse, ArmError> {
    if request.method.as_str() != "GET" {
        return Err(ArmError::method_not_allowed(request.method.as_str()));
    }
    Ok(ArmResponse::json(
        200,
        json!({
            "name": "xtenant",
            "authentication": {
                "loginEndpoint": format!("{}/", endpoints.login),
                "audiences": [MANAGEMENT_AUDIENCE],
                "tenant": "common",
                "identityProvider": "AAD",
            },
            "resourceManager": format!("{}/", endpoints.arm),
            "suffixes": {},
        }),
    ))
}

/// `GET /health`: `{"status":"Healthy"}` once the fake serves requests, for scripts that wait
/// on `xtenant serve`.
pub fn health(request: &Request) -> Result<ArmResponse, ArmError> {
    if request.method.as_str() != "GET" {
        return Err(ArmError::method_not_allowed(request.method.as_str()));
    }
    Ok(ArmResponse::json(200, json!({"status": "Healthy"})))
}

/// `GET /subscriptions`: the subscriptions of the token's tenant where the caller has a
/// role assignment, in the 2022-12-01 item shape.
pub fn list_subscriptions(context: &mut Context<'_>) -> Result<ArmResponse, ArmError> {
    require_get(context)?;
    let caller = &context.caller;
    let items = context
        .cloud
        .subscriptions_of(&caller.tenant)
        .into_iter()
        .filter(|subscription| {
            let scope = subscription.resource_id();
            context.cloud.role_assignments.values().any(|a| {
                a.principal_id == caller.object_id
                    && (scope.contains(&a.scope) || a.scope.contains(&scope))
            })
        })
        .map(subscription_json)
        .collect();
    Ok(ArmResponse::list(items))
}

/// `GET /subscriptions/{id}`.
pub fn subscription(context: &mut Context<'_>, id: &str) -> Result<ArmResponse, ArmError> {
    require_get(context)?;
    let found = context
        .cloud
        .subscription(id)
        .ok_or_else(|| ArmError::subscription_not_found(id))?;
    Ok(ArmResponse::json(200, subscription_json(found)))
}

/// `GET /tenants`: the caller's home tenant, the only one a service principal belongs to.
pub fn list_tenants(context: &mut Context<'_>) -> Result<ArmResponse, ArmError> {
    require_get(context)?;
    let items = context
        .cloud
        .tenants
        .iter()
        .filter(|t| t.id == context.caller.tenant)
        .map(|t| {
            json!({
                "id": format!("/tenants/{}", t.id),
                "tenantId": t.id,
                "countryCode": "US",
                "displayName": t.display_name,
                "domains": [t.default_domain],
                "tenantCategory": "Home",
                "defaultDomain": t.default_domain,
                "tenantType": "AAD",
            })
        })
        .collect();
    Ok(ArmResponse::list(items))
}

/// `GET /subscriptions/{s}/resourcegroups`: the groups the caller may read.
pub fn list_groups(context: &mut Context<'_>, subscription: &str) -> Result<ArmResponse, ArmError> {
    require_get(context)?;
    let subscription = SubscriptionId::new(subscription);
    let items = context
        .cloud
        .resource_groups
        .values()
        .filter(|g| {
            g.subscription
                .as_str()
                .eq_ignore_ascii_case(subscription.as_str())
        })
        .filter(|g| {
            context
                .cloud
                .has_action(&context.caller.object_id, &g.id, GROUP_READ)
        })
        .map(group_json)
        .collect();
    Ok(ArmResponse::list(items))
}

/// `/subscriptions/{s}/resourcegroups/{g}` with PUT, GET, HEAD or DELETE.
pub fn group(
    context: &mut Context<'_>,
    subscription: &str,
    name: &str,
) -> Result<ArmResponse, ArmError> {
    let parent = Parent {
        subscription: subscription.to_owned(),
        group: name.to_owned(),
    };
    match context.method() {
        "PUT" => put_group(context, &parent),
        "GET" => {
            context.authorize(&parent.group_id(), GROUP_READ)?;
            Ok(ArmResponse::json(200, group_json(context.group(&parent)?)))
        }
        "HEAD" => {
            context.authorize(&parent.group_id(), GROUP_READ)?;
            let status = if context.group(&parent).is_ok() {
                204
            } else {
                404
            };
            Ok(ArmResponse::empty(status))
        }
        "DELETE" => delete_group(context, &parent),
        _ => Err(context.method_not_allowed()),
    }
}

/// Creates a group (201) or updates its tags (200). ARM rejects a change of location.
fn put_group(context: &mut Context<'_>, parent: &Parent) -> Result<ArmResponse, ArmError> {
    let id = parent.group_id();
    context.authorize(&id, GROUP_WRITE)?;
    let body = context.body()?;
    let location = required_location(&body)?;

    if let Some(existing) = context.cloud.resource_groups.get_mut(&id.key()) {
        if existing.state == ProvisioningState::Deleting {
            return Err(ArmError::resource_group_being_deleted(&existing.name));
        }
        if existing.location != location {
            return Err(ArmError::new(
                409,
                "InvalidResourceGroupLocation",
                format!(
                    "Invalid resource group location '{location}'. The Resource group already exists \
                     in location '{}'.",
                    existing.location
                ),
            ));
        }
        existing.tags = tags(&body);
        return Ok(ArmResponse::json(200, group_json(existing)));
    }

    let group = ResourceGroup {
        id: id.clone(),
        name: parent.group.clone(),
        subscription: SubscriptionId::new(parent.subscription.clone()),
        location,
        tags: tags(&body),
        state: ProvisioningState::Succeeded,
    };
    let body = group_json(&group);
    context.cloud.resource_groups.insert(id.key(), group);
    Ok(ArmResponse::json(201, body))
}

/// Starts the deletion of a group and everything in it: 202 with a `Location` to poll.
fn delete_group(context: &mut Context<'_>, parent: &Parent) -> Result<ArmResponse, ArmError> {
    let id = parent.group_id();
    context.authorize(&id, GROUP_DELETE)?;
    let scope = context.group(parent)?.id.clone();

    let operation = context
        .operations
        .start(context.cloud, OperationKind::Delete { scope });
    let location = operation_result_url(
        &context.endpoints.arm,
        &parent.subscription,
        &operation.id,
        &context.api_version,
    );
    Ok(ArmResponse::empty(202)
        .with_header("location", location)
        .with_header("retry-after", RETRY_AFTER_SECONDS))
}

/// Serves the `Location` URL of a deletion: 202 while it runs, 200 once done.
pub fn operation_result(context: &mut Context<'_>, id: &str) -> Result<ArmResponse, ArmError> {
    require_get(context)?;
    let now = context.cloud.now();
    let operation = context
        .operations
        .get(id)
        .ok_or_else(|| ArmError::operation_not_found(id))?;
    if operation.finished(now) {
        return Ok(ArmResponse::empty(200));
    }
    // The request reached wiremock over plain HTTP behind the TLS terminator, so the URL is
    // rebuilt on the public ARM endpoint.
    let url = &context.request.url;
    let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
    let url = format!("{}{}{query}", context.endpoints.arm, url.path());
    Ok(ArmResponse::empty(202)
        .with_header("location", url)
        .with_header("retry-after", RETRY_AFTER_SECONDS))
}

fn require_get(context: &Context<'_>) -> Result<(), ArmError> {
    if context.method() == "GET" {
        Ok(())
    } else {
        Err(context.method_not_allowed())
    }
}

fn subscription_json(subscription: &Subscription) -> Value {
    json!({
        "id": subscription.resource_id().as_str(),
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "subscriptionId": subscription.id,
        "tenantId": subscription.tenant,
        "displayName": subscription.display_name,
        "state": "Enabled",
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "PayAsYouGo_2014-09-01",
            "spendingLimit": "Off",
        },
    })
}

fn group_json(group: &ResourceGroup) -> Value {
    let state = match group.state {
        ProvisioningState::Succeeded => "Succeeded",
        ProvisioningState::Deleting => "Deleting",
    };
    json!({
        "id": group.id.as_str(),
        "name": group.name,
        "type": "Microsoft.Resources/resourceGroups",
        "location": group.location,
        "tags": group.tags,
        "properties": {"provisioningState": state},
    })
}
