//! `Microsoft.ManagedIdentity/userAssignedIdentities` and their federated identity credentials.
//!
//! Creating an identity creates its service principal in the subscription's tenant, with a
//! client id and object id of its own. Federated credentials follow Entra's documented limits:
//! exactly one audience, at most 20 per identity, issuer and subject at most 600 characters,
//! and each issuer and subject pair used once per identity.
//!
//! Azure rejects concurrent credential writes under one identity with 409
//! `ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity`. The fake makes that
//! race deterministic: a created or replaced credential keeps its identity's credential writes
//! busy until it has propagated (`Cloud::delays.fic_propagation` after its write, on the model's
//! clock), and any PUT or DELETE of a credential under that identity in the window gets the 409.
//! With the default delay of zero no write ever conflicts.
// NOTE: a DELETE does not open a window of its own, because the model keeps no record of
// deleted credentials.

use serde_json::{Map, Value, json};

use super::errors::ArmError;
use super::response::ArmResponse;
use super::routes::MANAGED_IDENTITY;
use super::{Context, Parent, required_location, tags};
use crate::cloud::{FederatedCredential, ResourceId, UserAssignedIdentity};

const IDENTITY_READ: &str = "Microsoft.ManagedIdentity/userAssignedIdentities/read";
const IDENTITY_WRITE: &str = "Microsoft.ManagedIdentity/userAssignedIdentities/write";
const IDENTITY_DELETE: &str = "Microsoft.ManagedIdentity/userAssignedIdentities/delete";
const CREDENTIAL_READ: &str =
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read";
const CREDENTIAL_WRITE: &str =
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write";
const CREDENTIAL_DELETE: &str =
    "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete";

/// Federated credentials one identity may have.
pub const MAX_CREDENTIALS_PER_IDENTITY: usize = 20;
/// Maximum length of an issuer, subject or audience that Entra stores.
const MAX_CLAIM_LENGTH: usize = 600;

pub const CREDENTIAL_EMPTY_PROPERTIES: &str =
    "Federated Identity Credential from HTTP body has empty properties";
pub const CREDENTIAL_MISSING_FIELDS: &str = "The request format was unexpected. Federated Identity Credential must specify 'issuer', 'subject' and 'audience'.";
pub const CREDENTIAL_ONE_AUDIENCE: &str =
    "Federated identity credentials must have exactly one audience.";
pub const CREDENTIAL_DUPLICATE: &str =
    "Issuer and subject combination already exists for this Managed Identity.";

/// `.../userAssignedIdentities/{name}` with PUT, GET or DELETE.
pub fn identity(
    context: &mut Context<'_>,
    parent: &Parent,
    name: &str,
) -> Result<ArmResponse, ArmError> {
    let id = identity_id(parent, name);
    match context.method() {
        "PUT" => put_identity(context, parent, id),
        "GET" => {
            context.authorize(&id, IDENTITY_READ)?;
            Ok(ArmResponse::json(
                200,
                identity_json(find_identity(context, parent, &id)?),
            ))
        }
        "DELETE" => {
            context.authorize(&id, IDENTITY_DELETE)?;
            if find_identity(context, parent, &id).is_err() {
                context.group(parent)?;
                return Ok(ArmResponse::empty(204));
            }
            context.cloud.delete_within(&id);
            Ok(ArmResponse::empty(200))
        }
        _ => Err(context.method_not_allowed()),
    }
}

fn identity_id(parent: &Parent, name: &str) -> ResourceId {
    parent.group_id().join(&format!(
        "providers/{MANAGED_IDENTITY}/userAssignedIdentities/{name}"
    ))
}

fn find_identity<'c>(
    context: &'c Context<'_>,
    parent: &Parent,
    id: &ResourceId,
) -> Result<&'c UserAssignedIdentity, ArmError> {
    let group = context.group(parent)?;
    context.cloud.identities.get(&id.key()).ok_or_else(|| {
        ArmError::resource_not_found(
            &format!("{MANAGED_IDENTITY}/userAssignedIdentities/{}", id.name()),
            &group.name,
        )
    })
}

/// Creates an identity and its service principal (201), or updates its tags (200).
fn put_identity(
    context: &mut Context<'_>,
    parent: &Parent,
    id: ResourceId,
) -> Result<ArmResponse, ArmError> {
    context.authorize(&id, IDENTITY_WRITE)?;
    let body = context.body()?;
    let location = required_location(&body)?;
    let group = context.writable_group(parent)?;
    let id = group.id.join(&format!(
        "providers/{MANAGED_IDENTITY}/userAssignedIdentities/{}",
        id.name()
    ));

    if let Some(existing) = context.cloud.identities.get_mut(&id.key()) {
        existing.tags = tags(&body);
        return Ok(ArmResponse::json(200, identity_json(existing)));
    }

    let tenant = context.tenant();
    let mut identity = context
        .cloud
        .create_user_assigned_identity(id.clone(), &tenant, &location);
    identity.tags = tags(&body);
    let response = identity_json(&identity);
    context.cloud.identities.insert(id.key(), identity);
    Ok(ArmResponse::json(201, response))
}

/// `GET .../userAssignedIdentities/{id}/federatedIdentityCredentials`.
pub fn list_credentials(
    context: &mut Context<'_>,
    parent: &Parent,
    identity: &str,
) -> Result<ArmResponse, ArmError> {
    if context.method() != "GET" {
        return Err(context.method_not_allowed());
    }
    let identity_id = identity_id(parent, identity);
    context.authorize(&identity_id, CREDENTIAL_READ)?;
    parent_identity(context, parent, &identity_id)?;
    let items = context
        .cloud
        .federated_credentials
        .values()
        .filter(|c| c.identity == identity_id)
        .map(credential_json)
        .collect();
    Ok(ArmResponse::list(items))
}

/// `.../federatedIdentityCredentials/{name}` with PUT, GET or DELETE.
pub fn credential(
    context: &mut Context<'_>,
    parent: &Parent,
    identity: &str,
    name: &str,
) -> Result<ArmResponse, ArmError> {
    let identity_id = identity_id(parent, identity);
    let id = identity_id.join(&format!("federatedIdentityCredentials/{name}"));
    match context.method() {
        "PUT" => put_credential(context, parent, &identity_id, name),
        "GET" => {
            context.authorize(&id, CREDENTIAL_READ)?;
            parent_identity(context, parent, &identity_id)?;
            let credential = context.cloud.federated_credentials.get(&id.key()).ok_or_else(|| {
                ArmError::resource_not_found(
                    &format!("{MANAGED_IDENTITY}/userAssignedIdentities/{identity}/federatedIdentityCredentials/{name}"),
                    &parent.group,
                )
            })?;
            Ok(ArmResponse::json(200, credential_json(credential)))
        }
        "DELETE" => {
            context.authorize(&id, CREDENTIAL_DELETE)?;
            let identity_id = parent_identity(context, parent, &identity_id)?.id.clone();
            reject_concurrent_write(context, &identity_id)?;
            let removed = context.cloud.federated_credentials.remove(&id.key());
            Ok(ArmResponse::empty(if removed.is_some() {
                200
            } else {
                204
            }))
        }
        _ => Err(context.method_not_allowed()),
    }
}

/// Finds the identity a credential belongs to, or returns 404 `ParentResourceNotFound`.
fn parent_identity<'c>(
    context: &'c Context<'_>,
    parent: &Parent,
    identity_id: &ResourceId,
) -> Result<&'c UserAssignedIdentity, ArmError> {
    context.group(parent)?;
    context
        .cloud
        .identities
        .get(&identity_id.key())
        .ok_or_else(ArmError::parent_identity_not_found)
}

/// Checks a credential name: 3 to 120 characters, letters, digits, `-` and
/// `_`, starting with a letter or digit.
pub fn is_valid_credential_name(name: &str) -> bool {
    (3..=120).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The issuer, subject and audience of a credential request.
struct CredentialRequest {
    issuer: String,
    subject: String,
    audience: String,
}

/// Validates a credential body in the order the service reports problems.
fn credential_request(
    name: &str,
    body: &Map<String, Value>,
) -> Result<CredentialRequest, ArmError> {
    if !is_valid_credential_name(name) {
        return Err(ArmError::bad_request(format!(
            "Federated Identity Credential name '{name}' is invalid."
        )));
    }
    let properties = match body.get("properties") {
        Some(Value::Object(properties)) if !properties.is_empty() => properties,
        _ => return Err(ArmError::bad_request(CREDENTIAL_EMPTY_PROPERTIES)),
    };
    let text = |key: &str| {
        properties
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let (Some(issuer), Some(subject), Some(audiences)) = (
        text("issuer"),
        text("subject"),
        properties.get("audiences").and_then(Value::as_array),
    ) else {
        return Err(ArmError::bad_request(CREDENTIAL_MISSING_FIELDS));
    };
    let audience = match audiences.as_slice() {
        [] => return Err(ArmError::bad_request(CREDENTIAL_MISSING_FIELDS)),
        [Value::String(audience)] if !audience.is_empty() => audience.clone(),
        _ => return Err(ArmError::bad_request(CREDENTIAL_ONE_AUDIENCE)),
    };
    // NOTE: the service's wording for a non-https or over-long issuer has not been captured;
    // these messages are the fake's.
    if !issuer.starts_with("https://") {
        return Err(ArmError::bad_request(format!(
            "Federated Identity Credential issuer '{issuer}' is invalid. The issuer must be an https URL."
        )));
    }
    for (field, value) in [
        ("issuer", issuer),
        ("subject", subject),
        ("audience", audience.as_str()),
    ] {
        if value.len() > MAX_CLAIM_LENGTH {
            return Err(ArmError::bad_request(format!(
                "Federated Identity Credential {field} is {} characters long; the maximum is {MAX_CLAIM_LENGTH}.",
                value.len()
            )));
        }
    }
    Ok(CredentialRequest {
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
        audience,
    })
}

/// Creates (201) or replaces (200) a federated credential.
fn put_credential(
    context: &mut Context<'_>,
    parent: &Parent,
    identity_id: &ResourceId,
    name: &str,
) -> Result<ArmResponse, ArmError> {
    context.authorize(
        &identity_id.join(&format!("federatedIdentityCredentials/{name}")),
        CREDENTIAL_WRITE,
    )?;
    let body = context.body()?;
    context.writable_group(parent)?;
    let identity = parent_identity(context, parent, identity_id)?;
    // The federated credential service sees a new identity only after it replicates, so a
    // credential written right after its identity finds no parent, as on Azure.
    if identity.created_at + context.cloud.delays.identity_replication > context.cloud.now() {
        return Err(ArmError::parent_identity_not_found());
    }
    let identity_id = identity.id.clone();
    let id = identity_id.join(&format!("federatedIdentityCredentials/{name}"));
    let request = credential_request(name, &body)?;
    reject_concurrent_write(context, &identity_id)?;

    let siblings: Vec<&FederatedCredential> = context
        .cloud
        .federated_credentials
        .values()
        .filter(|c| c.identity == identity_id && c.id != id)
        .collect();
    if siblings
        .iter()
        .any(|c| c.issuer == request.issuer && c.subject == request.subject)
    {
        return Err(ArmError::bad_request(CREDENTIAL_DUPLICATE));
    }
    let exists = context.cloud.federated_credentials.contains_key(&id.key());
    if !exists && siblings.len() >= MAX_CREDENTIALS_PER_IDENTITY {
        // NOTE: Azure's wording for the 21st credential has not been captured.
        return Err(ArmError::bad_request(format!(
            "The managed identity '{identity_id}' already has {MAX_CREDENTIALS_PER_IDENTITY} federated \
             identity credentials, the maximum. Delete one before adding another."
        )));
    }

    let credential = FederatedCredential {
        id: id.clone(),
        identity: identity_id,
        issuer: request.issuer,
        subject: request.subject,
        audiences: vec![request.audience],
        created_at: context.cloud.now(),
    };
    let response = credential_json(&credential);
    context
        .cloud
        .federated_credentials
        .insert(id.key(), credential);
    Ok(ArmResponse::json(if exists { 200 } else { 201 }, response))
}

/// Returns 409 while a credential of the identity is within its propagation window, the
/// fake's stand-in for a write still in flight.
fn reject_concurrent_write(
    context: &Context<'_>,
    identity_id: &ResourceId,
) -> Result<(), ArmError> {
    let now = context.cloud.now();
    let window = context.cloud.delays.fic_propagation;
    let in_flight = context
        .cloud
        .federated_credentials
        .values()
        .any(|c| &c.identity == identity_id && c.created_at + window > now);
    if in_flight {
        return Err(ArmError::concurrent_federated_credential_writes(
            identity_id.as_str(),
        ));
    }
    Ok(())
}

fn identity_json(identity: &UserAssignedIdentity) -> Value {
    json!({
        "id": identity.id.as_str(),
        "name": identity.id.name(),
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
        "location": identity.location,
        "tags": identity.tags,
        "properties": {
            "isolationScope": "None",
            "tenantId": identity.tenant,
            "principalId": identity.principal_id,
            "clientId": identity.client_id,
        },
    })
}

fn credential_json(credential: &FederatedCredential) -> Value {
    json!({
        "id": credential.id.as_str(),
        "name": credential.name(),
        "type": "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials",
        "properties": {
            "issuer": credential.issuer,
            "subject": credential.subject,
            "audiences": credential.audiences,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names_follow_entra_rules() {
        assert!(is_valid_credential_name("fic1"));
        assert!(is_valid_credential_name("kubernetes-federated_credential"));
        assert!(!is_valid_credential_name("ab"));
        assert!(!is_valid_credential_name("-fic"));
        assert!(!is_valid_credential_name("fic.1"));
        assert!(!is_valid_credential_name(&"f".repeat(121)));
    }

    #[test]
    fn credential_needs_exactly_one_audience() {
        let body = json!({"properties": {"issuer": "https://i/", "subject": "s", "audiences": ["a", "b"]}});
        let error = credential_request("fic1", body.as_object().unwrap())
            .err()
            .unwrap();
        assert_eq!(error.message, CREDENTIAL_ONE_AUDIENCE);
    }

    #[test]
    fn credential_without_audience_is_rejected() {
        let body = json!({"properties": {"issuer": "https://i/", "subject": "s"}});
        let error = credential_request("fic1", body.as_object().unwrap())
            .err()
            .unwrap();
        assert_eq!(error.message, CREDENTIAL_MISSING_FIELDS);
    }
}
