//! A fake Azure Resource Manager over the cloud model.
//!
//! It serves the ARM calls that the Azure CLI 2.91.0 makes in the cross-tenant workload
//! identity walkthrough. Those cover cloud metadata, subscriptions and tenants, resource groups, AKS
//! clusters with their OIDC issuers, Service Bus namespaces, queues and authorization rules,
//! user-assigned identities with federated credentials, and RBAC role definitions and
//! assignments.
//!
//! Each request goes through the steps ARM takes: parse the route, authenticate the bearer
//! token, check the subscription's tenant, authorize the action against the caller's role
//! assignments, validate the body, act on the model, and respond with ARM's shapes, status
//! codes and error envelopes. Start reading at [`ArmResponder::handle`].

mod auth;
mod authorization;
mod containerservice;
mod duration;
pub mod errors;
mod lro;
mod managedidentity;
mod resources;
mod response;
mod routes;
mod servicebus;
mod servicebus_rules;
mod throttle;

use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Map, Value};
use tracing::{Span, debug, debug_span, field};
use wiremock::{Request, Respond, ResponseTemplate};

use crate::cloud::{Cloud, ResourceGroup, ResourceId, SharedCloud, TenantId, lock};
use crate::http::{json_body, normalized_path, query};
use crate::server::Endpoints;

pub use errors::ArmError;
use lro::Operations;
pub use response::ArmResponse;
use routes::{ProviderResource, Route};
pub use throttle::{RequestKind, ThrottleResponder, throttle_mock};

/// The model-backed responder of the fake ARM, mounted at the lowest priority of its
/// wiremock server.
pub struct ArmResponder {
    cloud: SharedCloud,
    endpoints: Arc<Endpoints>,
    operations: Mutex<Operations>,
}

impl ArmResponder {
    pub fn new(cloud: SharedCloud, endpoints: Arc<Endpoints>) -> Self {
        Self {
            cloud,
            endpoints,
            operations: Mutex::new(Operations::default()),
        }
    }

    /// Serves one request: parse, authenticate, check the subscription, then hand the route to
    /// its resource provider, which authorizes, validates, acts and responds.
    fn handle(&self, request: &Request, path: &str) -> Result<ArmResponse, ArmError> {
        if request.body.len() > errors::MAX_REQUEST_CONTENT {
            return Err(ArmError::request_content_too_large());
        }
        let route = Route::parse(path);
        match route {
            Route::MetadataEndpoints => return resources::metadata(request, &self.endpoints),
            Route::Health => return resources::health(request),
            _ => {}
        }

        let mut cloud = lock(&self.cloud);
        let mut operations = self
            .operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let caller = auth::authenticate(&cloud, request)?;
        Span::current().record("oid", caller.object_id.as_str());
        let api_version = query(request)
            .remove("api-version")
            .ok_or_else(ArmError::missing_api_version)?;

        operations.settle(&mut cloud);
        let tenant = match route.subscription() {
            Some(subscription) => Some(
                auth::subscription(&cloud, &caller, &subscription)?
                    .tenant
                    .clone(),
            ),
            None => None,
        };

        let mut context = Context {
            cloud: &mut cloud,
            operations: &mut operations,
            caller,
            tenant,
            request,
            endpoints: &self.endpoints,
            api_version,
        };
        dispatch(&mut context, route)
    }
}

impl Respond for ArmResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let path = normalized_path(request);
        let span =
            debug_span!("arm_request", method = %request.method, path = %path, oid = field::Empty);
        let _entered = span.enter();
        match self.handle(request, &path) {
            Ok(response) => {
                debug!(status = response.status, "request served");
                let mut template = response.to_template();
                if Route::parse(&path).subscription().is_some() {
                    let kind = RequestKind::of_method(request.method.as_str());
                    template = template.insert_header(
                        kind.remaining_header(),
                        kind.remaining_budget().to_string().as_str(),
                    );
                }
                template
            }
            Err(error) => {
                debug!(status = error.status, code = error.code, message = %error.message, "request rejected");
                error.to_template()
            }
        }
    }
}

fn dispatch(context: &mut Context<'_>, route: Route) -> Result<ArmResponse, ArmError> {
    match route {
        Route::MetadataEndpoints => resources::metadata(context.request, context.endpoints),
        Route::Health => resources::health(context.request),
        Route::Subscriptions => resources::list_subscriptions(context),
        Route::Tenants => resources::list_tenants(context),
        Route::Subscription { subscription } => resources::subscription(context, &subscription),
        Route::ResourceGroups { subscription } => resources::list_groups(context, &subscription),
        Route::ResourceGroup {
            subscription,
            group,
        } => resources::group(context, &subscription, &group),
        Route::OperationResult { operation, .. } => {
            resources::operation_result(context, &operation)
        }
        Route::AsyncOperation { operation, .. } => {
            containerservice::operation_status(context, &operation)
        }
        Route::RoleDefinitions { scope, name } => {
            authorization::role_definitions(context, &scope, name.as_deref())
        }
        Route::RoleAssignments { scope, name } => {
            authorization::role_assignments(context, &scope, name.as_deref())
        }
        Route::Provider {
            subscription,
            group,
            resource,
        } => {
            let parent = Parent {
                subscription,
                group,
            };
            match resource {
                ProviderResource::ManagedCluster { name, action } => {
                    containerservice::cluster(context, &parent, &name, action.as_deref())
                }
                ProviderResource::Namespace { name } => {
                    servicebus::namespace(context, &parent, &name)
                }
                ProviderResource::Queues { namespace } => {
                    servicebus::list_queues(context, &parent, &namespace)
                }
                ProviderResource::Queue { namespace, name } => {
                    servicebus::queue(context, &parent, &namespace, &name)
                }
                ProviderResource::AuthorizationRules { namespace } => {
                    servicebus_rules::list_rules(context, &parent, &namespace)
                }
                ProviderResource::AuthorizationRule {
                    namespace,
                    name,
                    action,
                } => servicebus_rules::rule(context, &parent, &namespace, &name, action.as_deref()),
                ProviderResource::Identity { name } => {
                    managedidentity::identity(context, &parent, &name)
                }
                ProviderResource::FederatedCredentials { identity } => {
                    managedidentity::list_credentials(context, &parent, &identity)
                }
                ProviderResource::FederatedCredential { identity, name } => {
                    managedidentity::credential(context, &parent, &identity, &name)
                }
            }
        }
        Route::Unknown {
            resource_type,
            namespace,
        } => Err(ArmError::invalid_resource_type(
            &resource_type,
            &namespace,
            &context.api_version,
        )),
    }
}

/// The subscription and resource group named in a provider route.
pub(crate) struct Parent {
    pub subscription: String,
    pub group: String,
}

impl Parent {
    /// Builds the group's id with canonical casing, before the group is known to exist.
    fn group_id(&self) -> ResourceId {
        routes::group_id(&self.subscription, &self.group)
    }
}

/// The state a resource provider handler works on: the locked model and the authenticated
/// request.
pub(crate) struct Context<'a> {
    cloud: &'a mut Cloud,
    operations: &'a mut Operations,
    caller: auth::Caller,
    /// Tenant of the route's subscription, once the caller's token has been checked against it.
    tenant: Option<TenantId>,
    request: &'a Request,
    endpoints: &'a Endpoints,
    api_version: String,
}

impl Context<'_> {
    fn method(&self) -> &str {
        self.request.method.as_str()
    }

    fn authorize(&self, scope: &ResourceId, action: &str) -> Result<(), ArmError> {
        auth::authorize(self.cloud, &self.caller, scope, action)
    }

    /// Returns the subscription's tenant, which every route with a subscription has.
    fn tenant(&self) -> TenantId {
        self.tenant
            .clone()
            .expect("the route's subscription was checked before dispatch")
    }

    /// Parses the JSON object body. An empty body reads as `{}`.
    fn body(&self) -> Result<Map<String, Value>, ArmError> {
        match json_body(self.request).map_err(ArmError::invalid_request_content)? {
            Value::Null => Ok(Map::new()),
            Value::Object(object) => Ok(object),
            other => Err(ArmError::invalid_request_content(format!(
                "expected a JSON object, found {}",
                json_type(&other)
            ))),
        }
    }

    /// Finds the resource group, or returns 404 `ResourceGroupNotFound`.
    fn group(&self, parent: &Parent) -> Result<&ResourceGroup, ArmError> {
        self.cloud
            .resource_groups
            .get(&parent.group_id().key())
            .ok_or_else(|| ArmError::resource_group_not_found(&parent.group))
    }

    /// Finds the resource group for a write, which requires that it is not being deleted.
    fn writable_group(&self, parent: &Parent) -> Result<&ResourceGroup, ArmError> {
        let group = self.group(parent)?;
        if group.state == crate::cloud::ProvisioningState::Deleting {
            return Err(ArmError::resource_group_being_deleted(&group.name));
        }
        Ok(group)
    }

    fn method_not_allowed(&self) -> ArmError {
        ArmError::method_not_allowed(self.method())
    }
}

/// Reads the `location` of a create request, normalised as ARM stores it (`East US` → `eastus`).
fn required_location(body: &Map<String, Value>) -> Result<String, ArmError> {
    let location = body
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if location.trim().is_empty() {
        return Err(ArmError::location_required());
    }
    Ok(location.to_ascii_lowercase().replace(' ', ""))
}

/// Reads the `tags` of a request, `{}` when absent.
fn tags(body: &Map<String, Value>) -> Value {
    match body.get("tags") {
        Some(Value::Object(tags)) => Value::Object(tags.clone()),
        _ => Value::Object(Map::new()),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
