//! `Microsoft.ServiceBus/namespaces` and their queues.
//!
//! Namespace names are global: the model keys namespaces by lower-cased name across every
//! subscription, and a taken name gets a 400 `BadRequest` from Service Bus, not a 409.
//! A new namespace reports `provisioningState: Created` and `status: Activating` until the
//! model's operation duration has passed since its creation, then `Succeeded` and `Active`,
//! as Azure's namespaces do; the Azure CLI polls the namespace until then. With the default
//! duration of zero a create answers `Succeeded` at once. A queue PUT answers 200 for both create and update, because the
//! CLI's generated `servicebus queue create` treats any other status as an error.

use serde_json::{Map, Value, json};
use time::Duration;

use super::duration::{self, TIMESPAN_MAX};
use super::errors::ArmError;
use super::response::{ArmResponse, timestamp};
use super::routes::SERVICE_BUS;
use super::{Context, Parent, required_location};
use crate::cloud::{Cloud, Namespace, Queue, QueueProperties, ResourceId};

const NAMESPACE_READ: &str = "Microsoft.ServiceBus/namespaces/read";
const NAMESPACE_WRITE: &str = "Microsoft.ServiceBus/namespaces/write";
const NAMESPACE_DELETE: &str = "Microsoft.ServiceBus/namespaces/delete";
const QUEUE_READ: &str = "Microsoft.ServiceBus/namespaces/queues/read";
const QUEUE_WRITE: &str = "Microsoft.ServiceBus/namespaces/queues/write";
const QUEUE_DELETE: &str = "Microsoft.ServiceBus/namespaces/queues/delete";

/// Service Bus's messages for names, followed by a correlation id on the wire.
pub const INVALID_NAMESPACE_NAME: &str = "The specified service namespace is invalid.";
pub const NAME_NOT_AVAILABLE: &str = "The specified name is not available. For more information visit https://aka.ms/eventhubsarmexceptions.";

/// Lock durations Service Bus accepts: 5 seconds to 5 minutes.
const MIN_LOCK_DURATION: Duration = Duration::seconds(5);
const MAX_LOCK_DURATION: Duration = Duration::minutes(5);

/// `.../namespaces/{name}` with PUT, GET or DELETE.
pub fn namespace(
    context: &mut Context<'_>,
    parent: &Parent,
    name: &str,
) -> Result<ArmResponse, ArmError> {
    let id = namespace_id(parent, name);
    match context.method() {
        "PUT" => put_namespace(context, parent, id),
        "GET" => {
            context.authorize(&id, NAMESPACE_READ)?;
            let namespace = find_namespace(context, parent, &id)?;
            Ok(ArmResponse::json(
                200,
                namespace_json(namespace, context.cloud),
            ))
        }
        "DELETE" => {
            context.authorize(&id, NAMESPACE_DELETE)?;
            context.group(parent)?;
            if find_namespace(context, parent, &id).is_err() {
                return Ok(ArmResponse::empty(204));
            }
            context.cloud.delete_within(&id);
            Ok(ArmResponse::empty(200))
        }
        _ => Err(context.method_not_allowed()),
    }
}

/// Checks Service Bus's namespace name rules: 6 to 50 characters, a letter first,
/// then letters, digits and hyphens, and no `-`, `-sb` or `-mgmt` at the end.
pub fn is_valid_namespace_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    (6..=50).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !lower.ends_with('-')
        && !lower.ends_with("-sb")
        && !lower.ends_with("-mgmt")
}

/// Checks a queue name: 1 to 260 letters, digits, `-`, `_`, `.` and `/`.
pub fn is_valid_queue_name(name: &str) -> bool {
    (1..=260).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

pub(super) fn namespace_id(parent: &Parent, name: &str) -> ResourceId {
    parent
        .group_id()
        .join(&format!("providers/{SERVICE_BUS}/namespaces/{name}"))
}

/// Finds the namespace at `id`. A namespace of the same name in another group does not count.
pub(super) fn find_namespace<'c>(
    context: &'c Context<'_>,
    parent: &Parent,
    id: &ResourceId,
) -> Result<&'c Namespace, ArmError> {
    let group = context.group(parent)?;
    context
        .cloud
        .namespaces
        .get(&id.name().to_ascii_lowercase())
        .filter(|n| &n.id == id)
        .ok_or_else(|| {
            ArmError::resource_not_found(
                &format!("{SERVICE_BUS}/namespaces/{}", id.name()),
                &group.name,
            )
        })
}

fn put_namespace(
    context: &mut Context<'_>,
    parent: &Parent,
    id: ResourceId,
) -> Result<ArmResponse, ArmError> {
    context.authorize(&id, NAMESPACE_WRITE)?;
    let body = context.body()?;
    let location = required_location(&body)?;
    let group = context.writable_group(parent)?;
    let id = group
        .id
        .join(&format!("providers/{SERVICE_BUS}/namespaces/{}", id.name()));
    let name = id.name().to_owned();
    if !is_valid_namespace_name(&name) {
        return Err(ArmError::servicebus_bad_request(INVALID_NAMESPACE_NAME));
    }
    let properties = body
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let disable_local_auth = properties.get("disableLocalAuth").and_then(Value::as_bool);
    let sku = body
        .get("sku")
        .and_then(|s| s.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);

    let key = name.to_ascii_lowercase();
    if let Some(existing) = context.cloud.namespaces.get_mut(&key) {
        if existing.id != id {
            return Err(ArmError::servicebus_bad_request(NAME_NOT_AVAILABLE));
        }
        if let Some(disable) = disable_local_auth {
            existing.disable_local_auth = disable;
        }
        if let Some(sku) = sku {
            existing.sku = sku;
        }
        let body = namespace_json(&context.cloud.namespaces[&key], context.cloud);
        return Ok(ArmResponse::json(200, body));
    }

    let mut namespace = Namespace::new(id, context.tenant(), location, context.cloud.now());
    if let Some(sku) = sku {
        namespace.sku = sku;
    }
    namespace.disable_local_auth = disable_local_auth.unwrap_or(false);
    let body = namespace_json(&namespace, context.cloud);
    context.cloud.namespaces.insert(key, namespace);
    Ok(ArmResponse::json(201, body))
}

/// `GET .../namespaces/{ns}/queues`.
pub fn list_queues(
    context: &mut Context<'_>,
    parent: &Parent,
    namespace: &str,
) -> Result<ArmResponse, ArmError> {
    if context.method() != "GET" {
        return Err(context.method_not_allowed());
    }
    let id = namespace_id(parent, namespace);
    context.authorize(&id, QUEUE_READ)?;
    let now = context.cloud.now();
    let namespace = find_namespace(context, parent, &id)?;
    let items = namespace
        .queues
        .values()
        .map(|q| queue_json(namespace, q, now))
        .collect();
    Ok(ArmResponse::list(items))
}

/// `.../namespaces/{ns}/queues/{name}` with PUT, GET or DELETE.
pub fn queue(
    context: &mut Context<'_>,
    parent: &Parent,
    namespace: &str,
    name: &str,
) -> Result<ArmResponse, ArmError> {
    let namespace_id = namespace_id(parent, namespace);
    let id = namespace_id.join(&format!("queues/{name}"));
    match context.method() {
        "PUT" => put_queue(context, parent, &namespace_id, name),
        "GET" => {
            context.authorize(&id, QUEUE_READ)?;
            let now = context.cloud.now();
            let namespace = find_namespace(context, parent, &namespace_id)?;
            let queue = namespace.queue(name).ok_or_else(|| {
                ArmError::resource_not_found(
                    &format!("{SERVICE_BUS}/namespaces/{}/queues/{name}", namespace.name),
                    &parent.group,
                )
            })?;
            Ok(ArmResponse::json(200, queue_json(namespace, queue, now)))
        }
        "DELETE" => {
            context.authorize(&id, QUEUE_DELETE)?;
            find_namespace(context, parent, &namespace_id)?;
            let key = namespace_id.name().to_ascii_lowercase();
            let namespace = context
                .cloud
                .namespaces
                .get_mut(&key)
                .expect("the namespace was found above");
            let removed = namespace.queues.remove(&name.to_ascii_lowercase());
            Ok(ArmResponse::empty(if removed.is_some() {
                200
            } else {
                204
            }))
        }
        _ => Err(context.method_not_allowed()),
    }
}

/// Creates or updates a queue. Properties the body leaves out keep their current values.
fn put_queue(
    context: &mut Context<'_>,
    parent: &Parent,
    namespace_id: &ResourceId,
    name: &str,
) -> Result<ArmResponse, ArmError> {
    context.authorize(&namespace_id.join(&format!("queues/{name}")), QUEUE_WRITE)?;
    let body = context.body()?;
    context.writable_group(parent)?;
    let namespace = find_namespace(context, parent, namespace_id)?;
    if !is_valid_queue_name(name) {
        return Err(ArmError::bad_request(format!(
            "The entity name '{name}' is invalid. Queue names are 1 to 260 characters: letters, \
             digits, '-', '_', '.' and '/'."
        )));
    }
    let current = namespace
        .queue(name)
        .map(|q| q.properties.clone())
        .unwrap_or_default();
    let requested = body
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let properties = queue_properties(&requested, current)?;

    let now = context.cloud.now();
    let key = namespace_id.name().to_ascii_lowercase();
    let namespace = context
        .cloud
        .namespaces
        .get_mut(&key)
        .expect("the namespace was found above");
    let queue_key = name.to_ascii_lowercase();
    match namespace.queues.get_mut(&queue_key) {
        Some(queue) => queue.properties = properties,
        None => {
            let id = namespace.id.join(&format!("queues/{name}"));
            namespace
                .queues
                .insert(queue_key.clone(), Queue::new(id, properties, now));
        }
    }
    let namespace = &context.cloud.namespaces[&key];
    Ok(ArmResponse::json(
        200,
        queue_json(namespace, &namespace.queues[&queue_key], now),
    ))
}

/// Applies the settable queue properties of a request to `properties`.
// NOTE: the model keeps only these properties; others a client sends (duplicate detection,
// auto-delete on idle, partitioning) are accepted and reported with their defaults.
fn queue_properties(
    requested: &Map<String, Value>,
    mut properties: QueueProperties,
) -> Result<QueueProperties, ArmError> {
    if let Some(lock) = duration_property(requested, "lockDuration")? {
        if !(MIN_LOCK_DURATION..=MAX_LOCK_DURATION).contains(&lock) {
            return Err(ArmError::bad_request(format!(
                "The lockDuration '{}' is out of range. It must be between PT5S and PT5M.",
                duration::format(lock)
            )));
        }
        properties.lock_duration = lock;
    }
    if let Some(ttl) = duration_property(requested, "defaultMessageTimeToLive")? {
        let never = duration::parse(TIMESPAN_MAX).expect("TimeSpan.MaxValue parses");
        properties.default_message_time_to_live = (ttl < never).then_some(ttl);
    }
    if let Some(count) = integer_property(requested, "maxDeliveryCount")? {
        if count < 1 {
            return Err(ArmError::bad_request(
                "The maxDeliveryCount must be at least 1.",
            ));
        }
        properties.max_delivery_count = u32::try_from(count).unwrap_or(u32::MAX);
    }
    if let Some(size) = integer_property(requested, "maxSizeInMegabytes")? {
        properties.max_size_in_megabytes = u64::try_from(size).unwrap_or(0);
    }
    if let Some(flag) = bool_property(requested, "requiresSession")? {
        properties.requires_session = flag;
    }
    if let Some(flag) = bool_property(requested, "deadLetteringOnMessageExpiration")? {
        properties.dead_lettering_on_message_expiration = flag;
    }
    Ok(properties)
}

fn duration_property(object: &Map<String, Value>, key: &str) -> Result<Option<Duration>, ArmError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => duration::parse(text)
            .map(Some)
            .map_err(|e| ArmError::invalid_request_content(format!("property '{key}': {e}"))),
        Some(_) => Err(ArmError::invalid_request_content(format!(
            "property '{key}' must be a string"
        ))),
    }
}

fn integer_property(object: &Map<String, Value>, key: &str) -> Result<Option<i64>, ArmError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_i64().map(Some).ok_or_else(|| {
            ArmError::invalid_request_content(format!("property '{key}' must be an integer"))
        }),
    }
}

fn bool_property(object: &Map<String, Value>, key: &str) -> Result<Option<bool>, ArmError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_bool().map(Some).ok_or_else(|| {
            ArmError::invalid_request_content(format!("property '{key}' must be a boolean"))
        }),
    }
}

/// A namespace as ARM returns it; provisioning finishes `operation_duration` after creation.
fn namespace_json(namespace: &Namespace, cloud: &Cloud) -> Value {
    let created = timestamp(namespace.created_at);
    let provisioned = namespace.created_at + cloud.delays.operation_duration <= cloud.now();
    let (state, status) = if provisioned {
        ("Succeeded", "Active")
    } else {
        ("Created", "Activating")
    };
    json!({
        "sku": {"name": namespace.sku, "tier": namespace.sku},
        "id": namespace.id.as_str(),
        "name": namespace.name,
        "type": "Microsoft.ServiceBus/Namespaces",
        "location": namespace.location,
        "tags": {},
        "properties": {
            "minimumTlsVersion": "1.2",
            "publicNetworkAccess": "Enabled",
            "disableLocalAuth": namespace.disable_local_auth,
            "zoneRedundant": false,
            "provisioningState": state,
            "metricId": format!("{}:{}", namespace.subscription, namespace.name.to_ascii_lowercase()),
            "createdAt": created,
            "updatedAt": created,
            "serviceBusEndpoint": format!("https://{}:443/", namespace.host_name()),
            "status": status,
        },
    })
}

fn queue_json(namespace: &Namespace, queue: &Queue, now: time::OffsetDateTime) -> Value {
    let properties = &queue.properties;
    let ttl = properties
        .default_message_time_to_live
        .map(duration::format)
        .unwrap_or_else(|| TIMESPAN_MAX.to_owned());
    let active = queue.active_count();
    let dead = queue.dead_letter_count();
    let size: usize = queue
        .messages
        .iter()
        .chain(&queue.dead_letters)
        .map(|m| m.header.len() + m.encoded.len())
        .sum();
    let created = timestamp(queue.created_at);
    json!({
        "id": queue.id.as_str(),
        "name": queue.name,
        "type": "Microsoft.ServiceBus/Namespaces/Queues",
        "location": namespace.location,
        "properties": {
            "maxMessageSizeInKilobytes": namespace.max_message_size() / 1024,
            "lockDuration": duration::format(properties.lock_duration),
            "maxSizeInMegabytes": properties.max_size_in_megabytes,
            "requiresDuplicateDetection": false,
            "requiresSession": properties.requires_session,
            "defaultMessageTimeToLive": ttl,
            "deadLetteringOnMessageExpiration": properties.dead_lettering_on_message_expiration,
            "enableBatchedOperations": true,
            "duplicateDetectionHistoryTimeWindow": "PT10M",
            "maxDeliveryCount": properties.max_delivery_count,
            "sizeInBytes": size,
            "messageCount": active + dead,
            "status": "Active",
            "autoDeleteOnIdle": TIMESPAN_MAX,
            "enablePartitioning": false,
            "enableExpress": false,
            "countDetails": {
                "activeMessageCount": active,
                "deadLetterMessageCount": dead,
                "scheduledMessageCount": 0,
                "transferMessageCount": 0,
                "transferDeadLetterMessageCount": 0,
            },
            "createdAt": created,
            "updatedAt": created,
            "accessedAt": timestamp(now),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_follow_service_bus_rules() {
        for valid in [
            "sbns01",
            "Producer-Queue-1",
            &format!("a{}", "b".repeat(49)),
        ] {
            assert!(is_valid_namespace_name(valid), "{valid} should be valid");
        }
        let too_long = format!("a{}", "b".repeat(50));
        for invalid in [
            "sbns1",
            "1sbns01",
            "sbns_01",
            "sbns01-",
            "mynamespace-sb",
            "mynamespace-SB",
            "mynamespace-mgmt",
            too_long.as_str(),
        ] {
            assert!(
                !is_valid_namespace_name(invalid),
                "{invalid} should be invalid"
            );
        }
    }

    #[test]
    fn queue_names_allow_paths() {
        assert!(is_valid_queue_name("orders/eu.west_1-a"));
        assert!(!is_valid_queue_name(""));
        assert!(!is_valid_queue_name("bad name"));
        assert!(!is_valid_queue_name(&"q".repeat(261)));
    }

    #[test]
    fn queue_properties_parse_durations() {
        let requested = json!({
            "lockDuration": "PT30S",
            "defaultMessageTimeToLive": "P1D",
            "maxDeliveryCount": 3,
            "requiresSession": true,
            "deadLetteringOnMessageExpiration": true,
        });
        let properties =
            queue_properties(requested.as_object().unwrap(), QueueProperties::default()).unwrap();
        assert_eq!(properties.lock_duration, Duration::seconds(30));
        assert_eq!(
            properties.default_message_time_to_live,
            Some(Duration::days(1))
        );
        assert_eq!(properties.max_delivery_count, 3);
        assert!(properties.requires_session);
        assert!(properties.dead_lettering_on_message_expiration);
    }

    #[test]
    fn timespan_max_ttl_means_no_expiry() {
        let requested = json!({"defaultMessageTimeToLive": TIMESPAN_MAX});
        let properties =
            queue_properties(requested.as_object().unwrap(), QueueProperties::default()).unwrap();
        assert_eq!(properties.default_message_time_to_live, None);
    }

    #[test]
    fn lock_duration_over_five_minutes_is_rejected() {
        let requested = json!({"lockDuration": "PT6M"});
        let error = queue_properties(requested.as_object().unwrap(), QueueProperties::default())
            .unwrap_err();
        assert_eq!(error.code, "BadRequest");
    }
}
