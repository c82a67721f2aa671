//! Identifier newtypes for the cloud model.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! guid_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Generates a fresh random GUID.
            pub fn random() -> Self {
                Self(Uuid::new_v4().to_string())
            }

            /// Wraps a value as given; comparisons elsewhere decide whether case matters.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

guid_newtype!(
    /// A Microsoft Entra tenant (directory) id.
    TenantId
);
guid_newtype!(
    /// An Azure subscription id.
    SubscriptionId
);
guid_newtype!(
    /// The application (client) id of a service principal; `appid` in access tokens.
    ClientId
);
guid_newtype!(
    /// The object id of a service principal; `oid` in access tokens, `principalId` in ARM.
    ObjectId
);

/// An ARM resource id such as `/subscriptions/{s}/resourceGroups/{g}/providers/{ns}/{type}/{name}`.
///
/// ARM compares ids without regard to case, so equality and lookups use [`ResourceId::key`];
/// the id keeps the casing it was created with for display.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResourceId(String);

impl ResourceId {
    pub fn new(id: impl Into<String>) -> Self {
        let id: String = id.into();
        let trimmed = id.trim_end_matches('/');
        Self(if trimmed.is_empty() {
            "/".to_owned()
        } else {
            trimmed.to_owned()
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Lower-cased form used as the lookup key.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }

    /// Checks whether `self` is `other` or one of its ancestors (a scope that contains it).
    pub fn contains(&self, other: &ResourceId) -> bool {
        if self.0 == "/" {
            return true;
        }
        let scope = self.key();
        let target = other.key();
        target == scope || target.starts_with(&format!("{scope}/"))
    }

    /// Builds a child id: `self` followed by `/segment`.
    pub fn join(&self, segment: &str) -> ResourceId {
        ResourceId::new(format!(
            "{}/{}",
            self.0.trim_end_matches('/'),
            segment.trim_start_matches('/')
        ))
    }

    /// Returns the subscription id named by the id, if any.
    pub fn subscription(&self) -> Option<SubscriptionId> {
        self.segment_after("subscriptions").map(SubscriptionId::new)
    }

    /// Returns the resource group name named by the id, if any.
    pub fn resource_group(&self) -> Option<String> {
        self.segment_after("resourcegroups").map(str::to_owned)
    }

    /// Returns the last segment: the resource's name.
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    fn segment_after(&self, label: &str) -> Option<&str> {
        let mut segments = self.0.split('/');
        while let Some(segment) = segments.next() {
            if segment.eq_ignore_ascii_case(label) {
                return segments.next().filter(|s| !s.is_empty());
            }
        }
        None
    }
}

impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

impl Eq for ResourceId {}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_contains_children_without_regard_to_case() {
        let rg = ResourceId::new("/subscriptions/S/resourceGroups/rg");
        let ns = ResourceId::new(
            "/subscriptions/s/resourcegroups/RG/providers/Microsoft.ServiceBus/namespaces/n",
        );
        assert!(rg.contains(&ns));
        assert!(!ns.contains(&rg));
        assert!(ResourceId::new("/").contains(&ns));
        assert!(!ResourceId::new("/subscriptions/s/resourceGroups/r").contains(&ns));
    }

    #[test]
    fn segments_are_read_from_the_id() {
        let id = ResourceId::new("/subscriptions/s1/resourcegroups/rg1/providers/X/y/z");
        assert_eq!(id.subscription(), Some(SubscriptionId::new("s1")));
        assert_eq!(id.resource_group().as_deref(), Some("rg1"));
        assert_eq!(id.name(), "z");
    }
}
