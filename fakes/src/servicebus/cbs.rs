//! The `$cbs` node: claims-based security put-token requests and their replies, and the
//! authorization of entity links from the tokens a connection has put.
//!
//! A put-token request is a message with application properties `operation`=`put-token`,
//! `type`, `name` (the audience URI) and `expiration`, and the token as an `amqp-value`
//! string body. The reply carries `status-code` (AMQP int) and `status-description`, and
//! `correlation-id` equal to the request's `message-id` with the same AMQP type.
//!
//! A Microsoft Entra token grants what the principal's role assignments allow. A shared
//! access signature grants the rights of the namespace rule whose key signed it, as they
//! were at the put-token, so a regenerated key or changed rights take effect at the next
//! put-token.

use serde_amqp::Value;
use serde_amqp::primitives::OrderedMap;
use time::OffsetDateTime;
use time::macros::format_description;

use super::address::{EntityAddress, resource_uri};
use super::codec::{self, FrameError, section};
use crate::cloud::rbac::{SERVICEBUS_RECEIVE, SERVICEBUS_SEND};
use crate::cloud::sas::{AccessRight, AccessRights, SharedAccessSignature};
use crate::cloud::{Cloud, Namespace, ObjectId, ResourceId, TokenRejection};

/// `type` of put-token requests that carry a Microsoft Entra access token.
pub const TOKEN_TYPE_JWT: &str = "jwt";
/// `type` of put-token requests that carry a shared access signature.
pub const TOKEN_TYPE_SAS: &str = "servicebus.windows.net:sastoken";
/// Audience of Microsoft Entra tokens for Service Bus.
pub const SERVICEBUS_AUDIENCE: &str = "https://servicebus.azure.net";
/// Status of an accepted put-token; Rust's fe2o3-amqp-cbs client accepts only 202.
pub const STATUS_ACCEPTED: i32 = 202;
/// Status of a rejected token.
pub const STATUS_UNAUTHORIZED: i32 = 401;
pub const STATUS_BAD_REQUEST: i32 = 400;
pub const STATUS_NOT_FOUND: i32 = 404;

/// A decoded put-token request.
#[derive(Debug, Clone)]
pub struct PutTokenRequest {
    /// `message-id` of the request, echoed as `correlation-id` with its AMQP type kept.
    pub message_id: Value,
    pub reply_to: Option<String>,
    pub operation: String,
    pub token_type: String,
    /// The audience: the namespace or entity URI the token is put for.
    pub name: String,
    pub token: String,
}

/// The right to use one namespace or entity, held by a connection after a put-token.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Lower-cased namespace host name.
    pub host: String,
    /// Lower-cased entity path, or empty when the audience names the whole namespace.
    pub entity_key: String,
    pub authority: Authority,
    pub expires_at: OffsetDateTime,
}

/// Whose rights a grant carries.
#[derive(Debug, Clone)]
pub enum Authority {
    /// A Microsoft Entra principal, whose role assignments decide at each check.
    Principal(ObjectId),
    /// A namespace's shared access rule, with the rights it had at the put-token.
    SharedAccessRule { name: String, rights: AccessRights },
}

impl std::fmt::Display for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authority::Principal(object_id) => write!(f, "principal {object_id}"),
            Authority::SharedAccessRule { name, .. } => write!(f, "shared access rule {name}"),
        }
    }
}

impl Grant {
    /// Returns whether this grant covers `entity` of the namespace `host` at `now`. A grant
    /// for an entity also covers the nodes below it, such as `q1/$DeadLetterQueue` and
    /// `q1/$management`.
    pub fn covers(&self, host: &str, entity: &EntityAddress, now: OffsetDateTime) -> bool {
        self.host.eq_ignore_ascii_case(host)
            && path_covers(&self.entity_key, &entity.entity_key())
            && self.expires_at > now
    }

    /// Returns whether the grant allows data action `action` (`SERVICEBUS_SEND` or
    /// `SERVICEBUS_RECEIVE`) on `entity`. A shared access rule allows sending with `Send`,
    /// receiving with `Listen`, and both with `Manage`.
    pub fn allows(&self, cloud: &Cloud, entity: &ResourceId, action: &str) -> bool {
        match &self.authority {
            Authority::Principal(object_id) => cloud.has_data_action(object_id, entity, action),
            Authority::SharedAccessRule { rights, .. } => match action {
                SERVICEBUS_SEND => rights.allow(AccessRight::Send),
                SERVICEBUS_RECEIVE => rights.allow(AccessRight::Listen),
                _ => rights.allow(AccessRight::Manage),
            },
        }
    }
}

/// Returns whether the lower-cased entity path `scope` (empty for the whole namespace)
/// is `key` or one of its parent paths.
fn path_covers(scope: &str, key: &str) -> bool {
    scope.is_empty()
        || key == scope
        || key
            .strip_prefix(scope)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Why a put-token failed: the status and description sent back to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutTokenFailure {
    pub status: i32,
    pub description: String,
}

/// Decodes a put-token request from a complete transfer payload.
pub fn parse_request(payload: &[u8]) -> Result<PutTokenRequest, FrameError> {
    let mut message_id = Value::Null;
    let mut reply_to = None;
    let mut application = OrderedMap::new();
    let mut token = None;
    for part in codec::split_sections(payload)? {
        match (part.code, part.value()?) {
            (section::PROPERTIES, Value::List(fields)) => {
                message_id = fields.first().cloned().unwrap_or(Value::Null);
                if let Some(Value::String(address)) = fields.get(4) {
                    reply_to = Some(address.clone());
                }
            }
            (section::APPLICATION_PROPERTIES, Value::Map(map)) => application = map,
            (section::AMQP_VALUE, Value::String(body)) => token = Some(body),
            _ => {}
        }
    }
    let property = |key: &str| match application.get(&Value::String(key.to_owned())) {
        Some(Value::String(value)) => value.clone(),
        Some(Value::Symbol(value)) => value.as_str().to_owned(),
        _ => String::new(),
    };
    Ok(PutTokenRequest {
        message_id,
        reply_to,
        operation: property("operation"),
        token_type: property("type"),
        name: property("name"),
        token: token.unwrap_or_default(),
    })
}

/// Verifies a put-token request against the model, as the namespace named by its
/// audience does, and returns the grant it gives the connection.
pub fn put_token(cloud: &Cloud, request: &PutTokenRequest) -> Result<Grant, PutTokenFailure> {
    let now = cloud.now();
    let fail = |status: i32, reason: &str| PutTokenFailure {
        status,
        description: format!("{reason} {}", tracking_suffix(None, now)),
    };
    if request.operation != "put-token" {
        let reason = format!(
            "The operation '{}' is not supported on $cbs.",
            request.operation
        );
        return Err(fail(STATUS_BAD_REQUEST, &reason));
    }
    let audience = EntityAddress::parse(&request.name);
    let Some(namespace) = audience
        .host
        .as_deref()
        .and_then(|host| cloud.namespace_by_host(host))
    else {
        let reason = format!(
            "The messaging entity '{}' could not be found. To know more visit https://aka.ms/sbResourceMgrExceptions.",
            request.name
        );
        return Err(fail(STATUS_NOT_FOUND, &reason));
    };
    match request.token_type.as_str() {
        TOKEN_TYPE_JWT => {}
        TOKEN_TYPE_SAS if namespace.disable_local_auth => {
            let reason = "LocalAuthDisabled: Authorization failed because SAS authentication has been disabled for the namespace.";
            return Err(fail(STATUS_UNAUTHORIZED, reason));
        }
        TOKEN_TYPE_SAS => {
            return shared_access_grant(namespace, &audience, &request.token, now)
                .map_err(|reason| fail(STATUS_UNAUTHORIZED, reason));
        }
        other => {
            let reason = format!("The token type '{other}' is not supported.");
            return Err(fail(STATUS_BAD_REQUEST, &reason));
        }
    }
    let claims = cloud
        .verify_access_token(&request.token, &[SERVICEBUS_AUDIENCE])
        .map_err(|rejection| fail(STATUS_UNAUTHORIZED, rejection_reason(&rejection)))?;
    if claims.tenant != namespace.tenant {
        return Err(fail(STATUS_UNAUTHORIZED, ISSUER_INVALID));
    }
    Ok(Grant {
        host: namespace.host_name(),
        entity_key: audience.entity_key(),
        authority: Authority::Principal(claims.object_id),
        expires_at: claims.expires_at,
    })
}

/// Service Bus's description of a shared access signature that no key of the named rule
/// signed, or that names no rule of the namespace.
const SAS_SIGNATURE_INVALID: &str = "InvalidSignature: The token has an invalid signature.";
/// Service Bus's description of a token whose `sr` does not cover the audience, as its
/// HTTP endpoint words it in public error reports.
const SAS_AUDIENCE_INVALID: &str =
    "InvalidAudience: The authorization header contains a token with a wrong audience.";
// NOTE: the malformed and expired wordings follow the pattern of the others; no capture of
// Service Bus's replies to such shared access signatures was found.
const SAS_MALFORMED: &str = "MalformedToken: The token is not a valid shared access signature.";
const SAS_EXPIRED: &str = "ExpiredToken: The token is expired.";

/// Verifies a shared access signature for `audience` against the rules of `namespace`,
/// in this order: the token's form, a signature by the primary or secondary key of the
/// rule it names, its expiry on the model's clock, and an `sr` that covers the audience.
fn shared_access_grant(
    namespace: &Namespace,
    audience: &EntityAddress,
    token: &str,
    now: OffsetDateTime,
) -> Result<Grant, &'static str> {
    let token = SharedAccessSignature::parse(token).map_err(|_| SAS_MALFORMED)?;
    let rule = namespace
        .authorization_rule(&token.key_name)
        .filter(|rule| rule.signed(&token))
        .ok_or(SAS_SIGNATURE_INVALID)?;
    if token.expires_at <= now {
        return Err(SAS_EXPIRED);
    }
    let resource = EntityAddress::parse(&token.resource);
    let host_matches = resource
        .host
        .as_deref()
        .is_some_and(|host| host.eq_ignore_ascii_case(&namespace.host_name()));
    if !host_matches || !path_covers(&resource.entity_key(), &audience.entity_key()) {
        return Err(SAS_AUDIENCE_INVALID);
    }
    Ok(Grant {
        host: namespace.host_name(),
        entity_key: audience.entity_key(),
        authority: Authority::SharedAccessRule {
            name: rule.name.clone(),
            rights: rule.rights.clone(),
        },
        expires_at: token.expires_at,
    })
}

const ISSUER_INVALID: &str = "InvalidIssuer: Token issuer is invalid.";

/// Service Bus's description of a rejected token. The `InvalidIssuer` wording is the
/// service's, as quoted in SDK issue reports.
// NOTE: the audience, signature and expiry wordings follow the same pattern but were not
// seen in a real service reply.
fn rejection_reason(rejection: &TokenRejection) -> &'static str {
    match rejection {
        TokenRejection::UnknownIssuer(_) => ISSUER_INVALID,
        TokenRejection::WrongAudience(_) => "InvalidAudience: The token audience is invalid.",
        TokenRejection::BadSignature => "InvalidSignature: The token has an invalid signature.",
        TokenRejection::Expired { .. } => "ExpiredToken: The token is expired.",
        TokenRejection::NotYetValid { .. } => "InvalidToken: The token is not valid yet.",
        TokenRejection::Malformed(_) => "InvalidToken: The token is malformed.",
    }
}

/// Encodes the reply to a put-token request.
pub fn encode_response(
    request_id: Value,
    to: Option<String>,
    status: i32,
    description: &str,
) -> Vec<u8> {
    let mut properties = vec![Value::Null; 13];
    properties[2] = to.map_or(Value::Null, Value::String);
    properties[5] = request_id;
    let mut application = OrderedMap::new();
    application.insert(Value::String("status-code".into()), Value::Int(status));
    application.insert(
        Value::String("status-description".into()),
        Value::String(description.into()),
    );
    let mut out = codec::encode_value(codec::described(
        section::PROPERTIES,
        Value::List(properties),
    ));
    out.extend(codec::encode_value(codec::described(
        section::APPLICATION_PROPERTIES,
        Value::Map(application),
    )));
    out.extend(codec::encode_value(codec::described(
        section::AMQP_VALUE,
        Value::Null,
    )));
    out
}

/// Builds the description Service Bus gives a link that lacks the claim for its direction.
pub fn unauthorized_description(
    namespace: &Namespace,
    entity: &str,
    claim: &str,
    now: OffsetDateTime,
) -> String {
    let host = namespace.host_name();
    format!(
        "Unauthorized access. '{claim}' claim(s) are required to perform this operation. Resource: '{}'. {}",
        resource_uri(&host, entity),
        tracking_suffix(Some(&format!("{host}:{entity}")), now),
    )
}

/// Builds the description Service Bus gives an attach to an entity that does not exist.
pub fn not_found_description(host: &str, entity: &str, now: OffsetDateTime) -> String {
    format!(
        "The messaging entity '{}' could not be found. To know more visit https://aka.ms/sbResourceMgrExceptions. {}",
        resource_uri(host, entity),
        tracking_suffix(Some(&format!("{host}:{entity}")), now),
    )
}

/// Builds the `TrackingId:…, SystemTracker:…, Timestamp:…` tail of Service Bus error descriptions.
pub fn tracking_suffix(system_tracker: Option<&str>, now: OffsetDateTime) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let timestamp = now.format(format).unwrap_or_default();
    match system_tracker {
        Some(tracker) => {
            format!(
                "TrackingId:{}_G0, SystemTracker:{tracker}, Timestamp:{timestamp}",
                uuid::Uuid::new_v4()
            )
        }
        None => format!(
            "TrackingId:{}, SystemTracker:NoSystemTracker, Timestamp:{timestamp}",
            uuid::Uuid::new_v4()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_echoes_id_type_and_int_status() {
        let bytes = encode_response(Value::Ulong(7), None, STATUS_ACCEPTED, "Accepted");
        let sections = codec::split_sections(&bytes).unwrap();
        let Value::List(properties) = sections[0].value().unwrap() else {
            panic!("properties")
        };
        assert_eq!(properties.len(), 13);
        assert_eq!(properties[5], Value::Ulong(7));
        let Value::Map(application) = sections[1].value().unwrap() else {
            panic!("application")
        };
        assert_eq!(
            application.get(&Value::String("status-code".into())),
            Some(&Value::Int(202))
        );
    }

    #[test]
    fn grant_covers_namespace_or_its_entity() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let grant = |entity: &str| Grant {
            host: "ns.servicebus.windows.net".into(),
            entity_key: entity.into(),
            authority: Authority::Principal(ObjectId::new("p")),
            expires_at: now + time::Duration::hours(1),
        };
        let q1 = EntityAddress::parse("Q1");
        assert!(grant("q1").covers("ns.servicebus.windows.net", &q1, now));
        assert!(grant("").covers("ns.servicebus.windows.net", &q1, now));
        assert!(!grant("q2").covers("ns.servicebus.windows.net", &q1, now));
        let dead_letters = EntityAddress::parse("q1/$DeadLetterQueue/$management");
        assert!(grant("q1").covers("ns.servicebus.windows.net", &dead_letters, now));
        assert!(!grant("q").covers("ns.servicebus.windows.net", &dead_letters, now));
        assert!(!grant("q1").covers("other.servicebus.windows.net", &q1, now));
        assert!(!grant("q1").covers(
            "ns.servicebus.windows.net",
            &q1,
            now + time::Duration::hours(2)
        ));
    }

    #[test]
    fn unauthorized_description_names_claim_and_resource() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let namespace = Namespace::new(
            crate::cloud::ResourceId::new(
                "/subscriptions/s/resourceGroups/g/providers/Microsoft.ServiceBus/namespaces/ns",
            ),
            crate::cloud::TenantId::new("t"),
            "eastus",
            now,
        );
        let text = unauthorized_description(&namespace, "q1", "Send", now);
        assert!(text.starts_with(
            "Unauthorized access. 'Send' claim(s) are required to perform this operation. Resource: 'sb://ns.servicebus.windows.net/q1'. TrackingId:"
        ));
        assert!(text.contains(
            "_G0, SystemTracker:ns.servicebus.windows.net:q1, Timestamp:1970-01-01T00:00:00"
        ));
        let listen = unauthorized_description(&namespace, "q1", "Listen", now);
        assert!(listen.starts_with("Unauthorized access. 'Listen' claim(s) are required"));
    }
}
