//! `Microsoft.ServiceBus/namespaces/authorizationRules`: a namespace's shared access
//! authorization rules, their keys and the connection strings built from them.
//!
//! Shapes follow the Service Bus REST API (`SBAuthorizationRule`, `AccessKeys`,
//! `RegenerateAccessKeyParameters`, api-version 2021-11-01). A rule PUT answers 200 for both
//! create and update, as Service Bus does. `listKeys` and `regenerateKeys` work whether or
//! not the namespace disables local authentication, as in Azure; only the data plane
//! rejects SAS tokens then.

use serde_json::{Map, Value, json};

use super::errors::ArmError;
use super::response::ArmResponse;
use super::routes::SERVICE_BUS;
use super::servicebus::{find_namespace, namespace_id};
use super::{Context, Parent};
use crate::cloud::sas::{
    AccessRight, AccessRights, AuthorizationRule, KeyType, MAX_RULES_PER_NAMESPACE,
};
use crate::cloud::{Namespace, ResourceId};

const RULE_READ: &str = "Microsoft.ServiceBus/namespaces/authorizationRules/read";
const RULE_WRITE: &str = "Microsoft.ServiceBus/namespaces/authorizationRules/write";
const RULE_DELETE: &str = "Microsoft.ServiceBus/namespaces/authorizationRules/delete";
const LIST_KEYS: &str = "Microsoft.ServiceBus/namespaces/authorizationRules/listkeys/action";
const REGENERATE_KEYS: &str =
    "Microsoft.ServiceBus/namespaces/authorizationRules/regenerateKeys/action";
/// `type` of an authorization rule in ARM responses, with Service Bus's casing.
const RULE_TYPE: &str = "Microsoft.ServiceBus/Namespaces/AuthorizationRules";

/// `GET .../namespaces/{ns}/authorizationRules`.
pub fn list_rules(
    context: &mut Context<'_>,
    parent: &Parent,
    namespace: &str,
) -> Result<ArmResponse, ArmError> {
    if context.method() != "GET" {
        return Err(context.method_not_allowed());
    }
    let id = namespace_id(parent, namespace);
    context.authorize(&id, RULE_READ)?;
    let namespace = find_namespace(context, parent, &id)?;
    let items = namespace
        .authorization_rules
        .values()
        .map(|rule| rule_json(namespace, rule))
        .collect();
    Ok(ArmResponse::list(items))
}

/// `.../namespaces/{ns}/authorizationRules/{name}` with PUT, GET or DELETE, and its
/// `listKeys` and `regenerateKeys` actions (POST).
pub fn rule(
    context: &mut Context<'_>,
    parent: &Parent,
    namespace: &str,
    name: &str,
    action: Option<&str>,
) -> Result<ArmResponse, ArmError> {
    let namespace_id = namespace_id(parent, namespace);
    let id = rule_id(&namespace_id, name);
    match (context.method(), action) {
        ("PUT", None) => put_rule(context, parent, &namespace_id, name),
        ("GET", None) => {
            context.authorize(&id, RULE_READ)?;
            let namespace = find_namespace(context, parent, &namespace_id)?;
            let rule = find_rule(namespace, name, parent)?;
            Ok(ArmResponse::json(200, rule_json(namespace, rule)))
        }
        ("DELETE", None) => {
            context.authorize(&id, RULE_DELETE)?;
            find_namespace(context, parent, &namespace_id)?;
            let removed = namespace_mut(context, &namespace_id)
                .authorization_rules
                .remove(&name.to_ascii_lowercase());
            Ok(ArmResponse::empty(if removed.is_some() {
                200
            } else {
                204
            }))
        }
        ("POST", Some(action)) if action.eq_ignore_ascii_case("listKeys") => {
            context.authorize(&id, LIST_KEYS)?;
            let namespace = find_namespace(context, parent, &namespace_id)?;
            let rule = find_rule(namespace, name, parent)?;
            Ok(ArmResponse::json(200, keys_json(namespace, rule)))
        }
        ("POST", Some(action)) if action.eq_ignore_ascii_case("regenerateKeys") => {
            regenerate_keys(context, parent, &namespace_id, name)
        }
        (_, Some(action)) if is_known_action(action) => Err(context.method_not_allowed()),
        (_, Some(action)) => Err(ArmError::invalid_resource_type(
            &format!("namespaces/authorizationRules/{action}"),
            SERVICE_BUS,
            &context.api_version,
        )),
        _ => Err(context.method_not_allowed()),
    }
}

fn is_known_action(action: &str) -> bool {
    action.eq_ignore_ascii_case("listKeys") || action.eq_ignore_ascii_case("regenerateKeys")
}

fn rule_id(namespace_id: &ResourceId, name: &str) -> ResourceId {
    namespace_id.join(&format!("authorizationRules/{name}"))
}

fn find_rule<'n>(
    namespace: &'n Namespace,
    name: &str,
    parent: &Parent,
) -> Result<&'n AuthorizationRule, ArmError> {
    namespace.authorization_rule(name).ok_or_else(|| {
        ArmError::resource_not_found(
            &format!(
                "{SERVICE_BUS}/namespaces/{}/authorizationRules/{name}",
                namespace.name
            ),
            &parent.group,
        )
    })
}

/// The namespace at `id`, which the caller has already found with `find_namespace`.
fn namespace_mut<'c>(context: &'c mut Context<'_>, id: &ResourceId) -> &'c mut Namespace {
    context
        .cloud
        .namespaces
        .get_mut(&id.name().to_ascii_lowercase())
        .expect("the namespace was found before")
}

/// Creates a rule with fresh keys, or replaces the rights of an existing one and keeps its
/// keys.
fn put_rule(
    context: &mut Context<'_>,
    parent: &Parent,
    namespace_id: &ResourceId,
    name: &str,
) -> Result<ArmResponse, ArmError> {
    context.authorize(&rule_id(namespace_id, name), RULE_WRITE)?;
    let body = context.body()?;
    context.writable_group(parent)?;
    let namespace = find_namespace(context, parent, namespace_id)?;
    if !is_valid_rule_name(name) {
        return Err(ArmError::servicebus_bad_request(&format!(
            "The authorization rule name '{name}' is invalid. It must be 1 to 256 letters, \
             digits, periods, hyphens and underscores, beginning and ending with a letter or \
             digit."
        )));
    }
    let rights = requested_rights(&body)?;
    let exists = namespace.authorization_rule(name).is_some();
    if !exists && namespace.authorization_rules.len() >= MAX_RULES_PER_NAMESPACE {
        // NOTE: the quota is Service Bus's documented one; the wording is the fake's own.
        return Err(ArmError::servicebus_bad_request(&format!(
            "The namespace '{}' already has {MAX_RULES_PER_NAMESPACE} authorization rules, the \
             maximum. Delete a rule before creating another.",
            namespace.name
        )));
    }

    let namespace = namespace_mut(context, namespace_id);
    let key = name.to_ascii_lowercase();
    match namespace.authorization_rules.get_mut(&key) {
        Some(rule) => rule.rights = rights,
        None => {
            let rule = AuthorizationRule::new(name, rights);
            namespace.authorization_rules.insert(key.clone(), rule);
        }
    }
    let namespace = &*namespace;
    Ok(ArmResponse::json(
        200,
        rule_json(namespace, &namespace.authorization_rules[&key]),
    ))
}

/// Checks a rule name: 1 to 256 letters, digits, `.`, `-` and `_`, starting and ending
/// with a letter or digit.
fn is_valid_rule_name(name: &str) -> bool {
    (1..=256).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Reads `properties.rights`: a non-empty array of `Listen`, `Send` and `Manage`, where
/// `Manage` needs both others, as Service Bus requires.
// NOTE: the validation messages are the fake's own; no capture of Service Bus's was found.
fn requested_rights(body: &Map<String, Value>) -> Result<AccessRights, ArmError> {
    let rights = body
        .get("properties")
        .and_then(|p| p.get("rights"))
        .ok_or_else(|| {
            ArmError::invalid_request_content("property 'properties.rights' is missing")
        })?;
    let Value::Array(items) = rights else {
        return Err(ArmError::invalid_request_content(
            "property 'properties.rights' must be an array",
        ));
    };
    let mut parsed = Vec::with_capacity(items.len());
    for item in items {
        let right = item.as_str().and_then(AccessRight::parse).ok_or_else(|| {
            ArmError::servicebus_bad_request(&format!(
                "The right {item} is invalid. Use 'Listen', 'Send' or 'Manage'."
            ))
        })?;
        parsed.push(right);
    }
    let rights = AccessRights::new(parsed);
    if rights.is_empty() {
        return Err(ArmError::servicebus_bad_request(
            "The authorization rule needs at least one right: 'Listen', 'Send' or 'Manage'.",
        ));
    }
    if rights.contains(AccessRight::Manage)
        && !(rights.contains(AccessRight::Listen) && rights.contains(AccessRight::Send))
    {
        return Err(ArmError::servicebus_bad_request(
            "The 'Manage' right requires the 'Listen' and 'Send' rights as well.",
        ));
    }
    Ok(rights)
}

/// Replaces the key that `keyType` names, with `key` when the body gives one, and returns
/// the rule's keys.
fn regenerate_keys(
    context: &mut Context<'_>,
    parent: &Parent,
    namespace_id: &ResourceId,
    name: &str,
) -> Result<ArmResponse, ArmError> {
    context.authorize(&rule_id(namespace_id, name), REGENERATE_KEYS)?;
    let body = context.body()?;
    let namespace = find_namespace(context, parent, namespace_id)?;
    find_rule(namespace, name, parent)?;
    let key_type = body
        .get("keyType")
        .and_then(Value::as_str)
        .and_then(KeyType::parse)
        .ok_or_else(|| {
            ArmError::invalid_request_content(
                "property 'keyType' must be 'PrimaryKey' or 'SecondaryKey'",
            )
        })?;
    let key = match body.get("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(key)) if !key.is_empty() => Some(key.clone()),
        Some(_) => {
            return Err(ArmError::invalid_request_content(
                "property 'key' must be a non-empty string",
            ));
        }
    };

    namespace_mut(context, namespace_id)
        .authorization_rule_mut(name)
        .expect("the rule was found above")
        .regenerate(key_type, key);
    let namespace = find_namespace(context, parent, namespace_id)?;
    let rule = find_rule(namespace, name, parent)?;
    Ok(ArmResponse::json(200, keys_json(namespace, rule)))
}

fn rule_json(namespace: &Namespace, rule: &AuthorizationRule) -> Value {
    let rights: Vec<&str> = rule.rights.iter().map(AccessRight::as_str).collect();
    json!({
        "id": rule_id(&namespace.id, &rule.name).as_str(),
        "name": rule.name,
        "type": RULE_TYPE,
        "location": namespace.location,
        "properties": {"rights": rights},
    })
}

/// The `AccessKeys` body of `listKeys` and `regenerateKeys`.
fn keys_json(namespace: &Namespace, rule: &AuthorizationRule) -> Value {
    let connection_string = |key: &str| {
        format!(
            "Endpoint=sb://{}/;SharedAccessKeyName={};SharedAccessKey={key}",
            namespace.host_name(),
            rule.name
        )
    };
    json!({
        "primaryConnectionString": connection_string(&rule.primary_key),
        "secondaryConnectionString": connection_string(&rule.secondary_key),
        "primaryKey": rule.primary_key,
        "secondaryKey": rule.secondary_key,
        "keyName": rule.name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_follow_service_bus_rules() {
        assert!(is_valid_rule_name("listen-only_1.a"));
        assert!(!is_valid_rule_name(""));
        assert!(!is_valid_rule_name("-leading"));
        assert!(!is_valid_rule_name("trailing."));
        assert!(!is_valid_rule_name("has space"));
        assert!(!is_valid_rule_name(&"r".repeat(257)));
    }

    #[test]
    fn manage_without_send_is_rejected() {
        let body = json!({"properties": {"rights": ["Manage", "Listen"]}});
        let error = requested_rights(body.as_object().unwrap()).unwrap_err();
        assert_eq!(error.code, "BadRequest");
    }

    #[test]
    fn rights_parse_without_case() {
        let body = json!({"properties": {"rights": ["listen", "SEND"]}});
        let rights = requested_rights(body.as_object().unwrap()).unwrap();
        assert_eq!(
            rights,
            AccessRights::new([AccessRight::Listen, AccessRight::Send])
        );
    }
}
