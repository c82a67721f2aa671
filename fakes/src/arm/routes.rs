//! Maps a request path to the ARM route it names.
//!
//! ARM matches path segments without regard to case: the resources SDK sends
//! `/resourcegroups/` and the code-generated CLI commands `/resourceGroups/`. Routes keep the
//! names as the client sent them; handlers build ids with canonical casing.

use crate::cloud::ResourceId;

pub const CONTAINER_SERVICE: &str = "Microsoft.ContainerService";
pub const SERVICE_BUS: &str = "Microsoft.ServiceBus";
pub const MANAGED_IDENTITY: &str = "Microsoft.ManagedIdentity";
pub const AUTHORIZATION: &str = "Microsoft.Authorization";

/// Canonical spellings of the fixed segments of the resource ids the fake serves.
const CANONICAL_SEGMENTS: &[&str] = &[
    "subscriptions",
    "resourceGroups",
    "providers",
    CONTAINER_SERVICE,
    "managedClusters",
    SERVICE_BUS,
    "namespaces",
    "queues",
    "topics",
    "authorizationRules",
    MANAGED_IDENTITY,
    "userAssignedIdentities",
    "federatedIdentityCredentials",
];

/// A route of the fake ARM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /metadata/endpoints`: cloud metadata for `az cloud register`.
    MetadataEndpoints,
    /// `GET /health`: a readiness probe of the fake, with no authentication. Azure has no
    /// such route.
    Health,
    Subscriptions,
    Tenants,
    Subscription {
        subscription: String,
    },
    ResourceGroups {
        subscription: String,
    },
    ResourceGroup {
        subscription: String,
        group: String,
    },
    /// The `Location` URL of a resource group deletion.
    OperationResult {
        subscription: String,
        operation: String,
    },
    /// The `Azure-AsyncOperation` URL of an AKS operation.
    AsyncOperation {
        subscription: String,
        operation: String,
    },
    RoleDefinitions {
        scope: ResourceId,
        name: Option<String>,
    },
    RoleAssignments {
        scope: ResourceId,
        name: Option<String>,
    },
    Provider {
        subscription: String,
        group: String,
        resource: ProviderResource,
    },
    /// A path no provider of the fake serves; `resource_type` and `namespace` are for the
    /// error message.
    Unknown {
        resource_type: String,
        namespace: String,
    },
}

/// A resource below `/subscriptions/{s}/resourceGroups/{g}/providers/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderResource {
    ManagedCluster {
        name: String,
        action: Option<String>,
    },
    Namespace {
        name: String,
    },
    Queues {
        namespace: String,
    },
    Queue {
        namespace: String,
        name: String,
    },
    AuthorizationRules {
        namespace: String,
    },
    /// A namespace's shared access rule, or with `action` its `listKeys` or
    /// `regenerateKeys`.
    AuthorizationRule {
        namespace: String,
        name: String,
        action: Option<String>,
    },
    Identity {
        name: String,
    },
    FederatedCredentials {
        identity: String,
    },
    FederatedCredential {
        identity: String,
        name: String,
    },
}

impl Route {
    /// Parses a path whose repeated slashes are already collapsed.
    pub fn parse(path: &str) -> Route {
        let segments: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(route) = parse_authorization(&segments) {
            return route;
        }
        let owned = |s: &str| s.to_owned();
        match segments.as_slice() {
            [m, e] if is(m, "metadata") && is(e, "endpoints") => Route::MetadataEndpoints,
            [h] if is(h, "health") => Route::Health,
            [t] if is(t, "tenants") => Route::Tenants,
            [s] if is(s, "subscriptions") => Route::Subscriptions,
            [s, sub] if is(s, "subscriptions") => Route::Subscription {
                subscription: owned(sub),
            },
            [s, sub, g] if is(s, "subscriptions") && is(g, "resourcegroups") => {
                Route::ResourceGroups {
                    subscription: owned(sub),
                }
            }
            [s, sub, g, group] if is(s, "subscriptions") && is(g, "resourcegroups") => {
                Route::ResourceGroup {
                    subscription: owned(sub),
                    group: owned(group),
                }
            }
            [s, sub, o, operation] if is(s, "subscriptions") && is(o, "operationresults") => {
                Route::OperationResult {
                    subscription: owned(sub),
                    operation: owned(operation),
                }
            }
            [s, sub, p, ns, l, _, o, operation]
                if is(s, "subscriptions")
                    && is(p, "providers")
                    && is(ns, CONTAINER_SERVICE)
                    && is(l, "locations")
                    && is(o, "operations") =>
            {
                Route::AsyncOperation {
                    subscription: owned(sub),
                    operation: owned(operation),
                }
            }
            [s, sub, g, group, p, namespace, rest @ ..]
                if is(s, "subscriptions") && is(g, "resourcegroups") && is(p, "providers") =>
            {
                match parse_provider(namespace, rest) {
                    Some(resource) => Route::Provider {
                        subscription: owned(sub),
                        group: owned(group),
                        resource,
                    },
                    None => unknown(namespace, rest),
                }
            }
            [s, _, p, namespace, rest @ ..] if is(s, "subscriptions") && is(p, "providers") => {
                unknown(namespace, rest)
            }
            _ => Route::Unknown {
                resource_type: path.to_owned(),
                namespace: String::new(),
            },
        }
    }

    /// The subscription the route belongs to, whose tenant the caller's token must match.
    pub fn subscription(&self) -> Option<String> {
        match self {
            Route::Subscription { subscription }
            | Route::ResourceGroups { subscription }
            | Route::ResourceGroup { subscription, .. }
            | Route::OperationResult { subscription, .. }
            | Route::AsyncOperation { subscription, .. }
            | Route::Provider { subscription, .. } => Some(subscription.clone()),
            Route::RoleDefinitions { scope, .. } | Route::RoleAssignments { scope, .. } => {
                scope.subscription().map(|s| s.as_str().to_owned())
            }
            Route::MetadataEndpoints
            | Route::Health
            | Route::Subscriptions
            | Route::Tenants
            | Route::Unknown { .. } => None,
        }
    }
}

fn is(segment: &str, expected: &str) -> bool {
    segment.eq_ignore_ascii_case(expected)
}

/// `{scope}/providers/Microsoft.Authorization/{roleDefinitions|roleAssignments}[/{name}]`, where
/// the scope is everything before the last `providers/Microsoft.Authorization`.
fn parse_authorization(segments: &[&str]) -> Option<Route> {
    let index = (0..segments.len().saturating_sub(1))
        .rev()
        .find(|&i| is(segments[i], "providers") && is(segments[i + 1], AUTHORIZATION))?;
    let scope = canonical_scope(&segments[..index]);
    let name = |n: Option<&&str>| n.map(|s| (*s).to_owned());
    match &segments[index + 2..] {
        [kind, rest @ ..] if rest.len() <= 1 && is(kind, "roleDefinitions") => {
            Some(Route::RoleDefinitions {
                scope,
                name: name(rest.first()),
            })
        }
        [kind, rest @ ..] if rest.len() <= 1 && is(kind, "roleAssignments") => {
            Some(Route::RoleAssignments {
                scope,
                name: name(rest.first()),
            })
        }
        rest => Some(unknown(AUTHORIZATION, rest)),
    }
}

fn parse_provider(namespace: &str, rest: &[&str]) -> Option<ProviderResource> {
    let owned = |s: &&str| (*s).to_owned();
    if is(namespace, CONTAINER_SERVICE) {
        return match rest {
            [t, name] if is(t, "managedClusters") => Some(ProviderResource::ManagedCluster {
                name: owned(name),
                action: None,
            }),
            [t, name, action] if is(t, "managedClusters") => {
                Some(ProviderResource::ManagedCluster {
                    name: owned(name),
                    action: Some(owned(action)),
                })
            }
            _ => None,
        };
    }
    if is(namespace, SERVICE_BUS) {
        return match rest {
            [t, name] if is(t, "namespaces") => {
                Some(ProviderResource::Namespace { name: owned(name) })
            }
            [t, ns, q] if is(t, "namespaces") && is(q, "queues") => {
                Some(ProviderResource::Queues {
                    namespace: owned(ns),
                })
            }
            [t, ns, q, name] if is(t, "namespaces") && is(q, "queues") => {
                Some(ProviderResource::Queue {
                    namespace: owned(ns),
                    name: owned(name),
                })
            }
            [t, ns, a] if is(t, "namespaces") && is(a, "authorizationRules") => {
                Some(ProviderResource::AuthorizationRules {
                    namespace: owned(ns),
                })
            }
            [t, ns, a, name, action @ ..]
                if is(t, "namespaces") && is(a, "authorizationRules") && action.len() <= 1 =>
            {
                Some(ProviderResource::AuthorizationRule {
                    namespace: owned(ns),
                    name: owned(name),
                    action: action.first().map(owned),
                })
            }
            _ => None,
        };
    }
    if is(namespace, MANAGED_IDENTITY) {
        return match rest {
            [t, name] if is(t, "userAssignedIdentities") => {
                Some(ProviderResource::Identity { name: owned(name) })
            }
            [t, id, f]
                if is(t, "userAssignedIdentities") && is(f, "federatedIdentityCredentials") =>
            {
                Some(ProviderResource::FederatedCredentials {
                    identity: owned(id),
                })
            }
            [t, id, f, name]
                if is(t, "userAssignedIdentities") && is(f, "federatedIdentityCredentials") =>
            {
                Some(ProviderResource::FederatedCredential {
                    identity: owned(id),
                    name: owned(name),
                })
            }
            _ => None,
        };
    }
    None
}

/// Builds an unknown route from the type segments after the namespace (every other segment,
/// names skipped) joined with `/`.
fn unknown(namespace: &str, rest: &[&str]) -> Route {
    let resource_type: Vec<&str> = rest.iter().step_by(2).copied().collect();
    Route::Unknown {
        resource_type: resource_type.join("/"),
        namespace: namespace.to_owned(),
    }
}

/// Builds a scope id with its fixed segments in canonical casing and its names as given.
pub fn canonical_scope(segments: &[&str]) -> ResourceId {
    let mut id = String::new();
    for (index, segment) in segments.iter().enumerate() {
        // Fixed segments sit at even positions, and the provider namespace right after
        // `providers` at position 5.
        let fixed = index % 2 == 0 || index == 5;
        let canonical = CANONICAL_SEGMENTS.iter().find(|c| fixed && is(segment, c));
        id.push('/');
        id.push_str(canonical.copied().unwrap_or(segment));
    }
    ResourceId::new(if id.is_empty() { "/".to_owned() } else { id })
}

/// `/subscriptions/{s}/resourceGroups/{g}`.
pub fn group_id(subscription: &str, group: &str) -> ResourceId {
    ResourceId::new(format!(
        "/subscriptions/{subscription}/resourceGroups/{group}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_match_without_case() {
        assert_eq!(
            Route::parse("/subscriptions/s1/resourcegroups/rg1"),
            Route::ResourceGroup {
                subscription: "s1".into(),
                group: "rg1".into()
            }
        );
        assert_eq!(
            Route::parse(
                "/SUBSCRIPTIONS/s1/resourceGroups/rg1/providers/microsoft.servicebus/NAMESPACES/ns1/queues/q1"
            ),
            Route::Provider {
                subscription: "s1".into(),
                group: "rg1".into(),
                resource: ProviderResource::Queue {
                    namespace: "ns1".into(),
                    name: "q1".into()
                },
            }
        );
    }

    #[test]
    fn authorization_scope_is_prefix_in_canonical_case() {
        let route = Route::parse(
            "/subscriptions/s1/resourcegroups/rg1/providers/microsoft.servicebus/namespaces/Ns1/providers/Microsoft.Authorization/roleAssignments/a1",
        );
        let Route::RoleAssignments { scope, name } = route else {
            panic!("not a role assignment route")
        };
        assert_eq!(
            scope.as_str(),
            "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.ServiceBus/namespaces/Ns1"
        );
        assert_eq!(name.as_deref(), Some("a1"));
    }

    #[test]
    fn root_scope_role_definitions() {
        let route = Route::parse("/providers/Microsoft.Authorization/roleDefinitions");
        assert_eq!(
            route,
            Route::RoleDefinitions {
                scope: ResourceId::new("/"),
                name: None
            }
        );
    }

    #[test]
    fn unknown_type_names_namespace() {
        let route =
            Route::parse("/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.Web/sites/app1");
        assert_eq!(
            route,
            Route::Unknown {
                resource_type: "sites".into(),
                namespace: "Microsoft.Web".into()
            }
        );
    }
}
