//! Link addresses and CBS audiences as Service Bus clients write them.
//!
//! Clients name an entity as `amqps://host[:port]/entity` (Python), `sb://host/entity`
//! (Python audiences), `amqps://host:5671/entity` (Rust audiences) or a bare `entity`
//! (Go, Rust). The broker resolves all of them to the same entity and compares entity
//! paths without regard to case, as Service Bus does.

use crate::cloud::servicebus::SubQueue;

/// A link address or audience split into the namespace host it names (if any) and the
/// entity path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityAddress {
    /// Host name without port, lower-cased; `None` for a bare entity path.
    pub host: Option<String>,
    /// Entity path without leading or trailing slashes, as written by the client.
    pub entity: String,
}

impl EntityAddress {
    /// Parses an address of the forms `scheme://host[:port]/entity` or `entity`.
    pub fn parse(address: &str) -> Self {
        let Some((_scheme, rest)) = address.split_once("://") else {
            return Self {
                host: None,
                entity: address.trim_matches('/').to_owned(),
            };
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(host, _port)| host);
        Self {
            host: Some(host.to_ascii_lowercase()),
            entity: path.trim_matches('/').to_owned(),
        }
    }

    /// Lower-cased entity path used for lookups.
    pub fn entity_key(&self) -> String {
        self.entity.to_ascii_lowercase()
    }

    /// Whether this names a node of the broker itself, such as `$cbs`, rather than an entity.
    pub fn is_cbs(&self) -> bool {
        self.entity.eq_ignore_ascii_case("$cbs")
    }

    /// Whether this names an entity's `$management` node.
    pub fn is_management(&self) -> bool {
        self.entity.to_ascii_lowercase().ends_with("$management")
    }

    /// Splits the entity path into the queue it belongs to and the part of that queue it
    /// names: `q1`, `q1/$DeadLetterQueue`, `q1/$management` or
    /// `q1/$DeadLetterQueue/$management`.
    pub fn node_path(&self) -> NodePath {
        let mut path = self.entity.as_str();
        let management = strip_segment(&mut path, MANAGEMENT_SEGMENT);
        let dead_letter = strip_segment(&mut path, DEAD_LETTER_SEGMENT);
        NodePath {
            queue: path.to_owned(),
            sub_queue: if dead_letter {
                SubQueue::DeadLetter
            } else {
                SubQueue::Main
            },
            management,
        }
    }
}

/// Last path segment of an entity's request-response node.
const MANAGEMENT_SEGMENT: &str = "$management";
/// Last path segment of a queue's dead-letter sub-queue.
const DEAD_LETTER_SEGMENT: &str = "$DeadLetterQueue";

/// What an entity path names inside a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePath {
    /// Path of the queue, as written by the client.
    pub queue: String,
    pub sub_queue: SubQueue,
    /// Whether the path names the `$management` node rather than messages.
    pub management: bool,
}

/// Removes a trailing `/segment` (any case) from `path`, returning whether it was there.
fn strip_segment(path: &mut &str, segment: &str) -> bool {
    let Some((head, last)) = path.rsplit_once('/') else {
        return false;
    };
    if !last.eq_ignore_ascii_case(segment) {
        return false;
    }
    *path = head;
    true
}

/// The `sb://` form Service Bus uses for an entity in error descriptions.
pub fn resource_uri(namespace_host: &str, entity: &str) -> String {
    format!("sb://{namespace_host}/{entity}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_client_form() {
        let cases = [
            (
                "amqps://ns1.servicebus.windows.net/q1",
                Some("ns1.servicebus.windows.net"),
                "q1",
            ),
            (
                "amqps://NS1.servicebus.windows.net:5671/q1",
                Some("ns1.servicebus.windows.net"),
                "q1",
            ),
            (
                "sb://ns1.servicebus.windows.net/q1/",
                Some("ns1.servicebus.windows.net"),
                "q1",
            ),
            ("amqp://localhost:6765/hub1", Some("localhost"), "hub1"),
            (
                "sb://ns1.servicebus.windows.net/",
                Some("ns1.servicebus.windows.net"),
                "",
            ),
            (
                "sb://ns1.servicebus.windows.net",
                Some("ns1.servicebus.windows.net"),
                "",
            ),
            ("MyQueue", None, "MyQueue"),
            ("t1/Subscriptions/s1", None, "t1/Subscriptions/s1"),
        ];
        for (input, host, entity) in cases {
            let parsed = EntityAddress::parse(input);
            assert_eq!(parsed.host.as_deref(), host, "{input}");
            assert_eq!(parsed.entity, entity, "{input}");
        }
    }

    #[test]
    fn entity_key_ignores_case() {
        assert_eq!(
            EntityAddress::parse("sb://h/MyQueue").entity_key(),
            "myqueue"
        );
    }

    #[test]
    fn node_path_splits_sub_queue_and_management() {
        let cases = [
            ("q1", "q1", SubQueue::Main, false),
            ("q1/$management", "q1", SubQueue::Main, true),
            ("q1/$DeadLetterQueue", "q1", SubQueue::DeadLetter, false),
            (
                "q1/$deadletterqueue/$Management",
                "q1",
                SubQueue::DeadLetter,
                true,
            ),
        ];
        for (input, queue, sub_queue, management) in cases {
            let path = EntityAddress::parse(&format!("amqps://h/{input}")).node_path();
            assert_eq!(path.queue, queue, "{input}");
            assert_eq!(path.sub_queue, sub_queue, "{input}");
            assert_eq!(path.management, management, "{input}");
        }
    }

    #[test]
    fn recognises_broker_nodes() {
        assert!(EntityAddress::parse("$cbs").is_cbs());
        assert!(EntityAddress::parse("amqps://h/$CBS").is_cbs());
        assert!(EntityAddress::parse("q1/$management").is_management());
        assert!(!EntityAddress::parse("q1").is_management());
    }
}
