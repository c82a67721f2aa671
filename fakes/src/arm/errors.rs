//! Every error the fake ARM returns, with the codes and messages Azure Resource Manager uses.
//!
//! Errors go out in ARM's envelope `{"error":{"code","message"}}` with
//! `Content-Type: application/json; charset=utf-8`. Messages are Azure's wording as captured
//! from the Azure CLI's recorded sessions and public error reports; where no capture exists
//! the constructor carries a `NOTE:`.

use serde_json::json;
use time::OffsetDateTime;
use wiremock::ResponseTemplate;

use super::response::JSON_CONTENT_TYPE;

/// Bearer token missing (ARM front door).
pub const AUTHENTICATION_FAILED: &str = "AuthenticationFailed";
/// Request body over ARM's 4 MB limit (ARM request limits; seen in deployment failures).
pub const REQUEST_CONTENT_TOO_LARGE: &str = "RequestContentTooLarge";
/// Largest request body ARM accepts: 4 MB.
pub const MAX_REQUEST_CONTENT: usize = 4 * 1024 * 1024;
/// Bearer token malformed, badly signed, for another audience, or not yet valid.
pub const INVALID_AUTHENTICATION_TOKEN: &str = "InvalidAuthenticationToken";
/// Bearer token past its `exp`.
pub const EXPIRED_AUTHENTICATION_TOKEN: &str = "ExpiredAuthenticationToken";
/// Bearer token issued by another tenant than the subscription's.
pub const INVALID_AUTHENTICATION_TOKEN_TENANT: &str = "InvalidAuthenticationTokenTenant";
/// The caller's role assignments do not allow the action at the scope.
pub const AUTHORIZATION_FAILED: &str = "AuthorizationFailed";
pub const SUBSCRIPTION_NOT_FOUND: &str = "SubscriptionNotFound";
pub const MISSING_API_VERSION_PARAMETER: &str = "MissingApiVersionParameter";
/// The body is not valid JSON or lacks a required property.
pub const INVALID_REQUEST_CONTENT: &str = "InvalidRequestContent";
/// No resource provider serves the path.
pub const INVALID_RESOURCE_TYPE: &str = "InvalidResourceType";
pub const METHOD_NOT_ALLOWED: &str = "MethodNotAllowed";
pub const LOCATION_REQUIRED: &str = "LocationRequired";
pub const RESOURCE_GROUP_NOT_FOUND: &str = "ResourceGroupNotFound";
pub const RESOURCE_GROUP_BEING_DELETED: &str = "ResourceGroupBeingDeleted";
pub const RESOURCE_NOT_FOUND: &str = "ResourceNotFound";
pub const PARENT_RESOURCE_NOT_FOUND: &str = "ParentResourceNotFound";
/// Resource-provider validation failures (Service Bus names, federated credentials).
pub const BAD_REQUEST: &str = "BadRequest";
pub const PRINCIPAL_NOT_FOUND: &str = "PrincipalNotFound";
pub const ROLE_ASSIGNMENT_EXISTS: &str = "RoleAssignmentExists";
pub const ROLE_ASSIGNMENT_NOT_FOUND: &str = "RoleAssignmentNotFound";
pub const ROLE_ASSIGNMENT_UPDATE_NOT_PERMITTED: &str = "RoleAssignmentUpdateNotPermitted";
pub const INVALID_ROLE_ASSIGNMENT_ID: &str = "InvalidRoleAssignmentId";
pub const ROLE_DEFINITION_DOES_NOT_EXIST: &str = "RoleDefinitionDoesNotExist";
pub const OPERATION_NOT_FOUND: &str = "OperationNotFound";
/// A federated credential write under an identity while another one is in flight.
pub const CONCURRENT_FEDERATED_CREDENTIAL_WRITES: &str =
    "ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity";
/// The subscription's request budget for reads, writes or deletes is spent.
pub const SUBSCRIPTION_REQUESTS_THROTTLED: &str = "SubscriptionRequestsThrottled";

/// `WWW-Authenticate` on a 401 for a missing `Authorization` header, as ARM sends it
/// (challenge-parsing tests of azure-mgmt-core and the Go SDK's bearer policy).
pub const MISSING_TOKEN_CHALLENGE: &str = "Bearer authorization_uri=\"https://login.windows.net/\", error=\"invalid_token\", error_description=\"The authentication failed because of missing 'Authorization' header.\"";

/// Header that marks a 404 produced by ARM's gateway rather than a resource provider.
pub const FAILURE_CAUSE_HEADER: &str = "x-ms-failure-cause";

/// An ARM error response.
#[derive(Clone, Debug)]
pub struct ArmError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub headers: Vec<(&'static str, String)>,
}

impl ArmError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn marked_from_gateway(self) -> Self {
        self.with_header(FAILURE_CAUSE_HEADER, "gateway")
    }

    pub fn authentication_failed() -> Self {
        Self::new(
            401,
            AUTHENTICATION_FAILED,
            "Authentication failed. The 'Authorization' header is missing.",
        )
        .with_header("www-authenticate", MISSING_TOKEN_CHALLENGE)
    }

    /// Builds the 413 for a request body over [`MAX_REQUEST_CONTENT`].
    pub fn request_content_too_large() -> Self {
        Self::new(
            413,
            REQUEST_CONTENT_TOO_LARGE,
            "The request content size exceeds the maximum size of 4 MB.",
        )
    }

    /// Builds the rejection of an `Authorization` header that is present but not a bearer
    /// token (Basic credentials, say).
    /// NOTE: the message is ARM's as remembered, not captured.
    pub fn authorization_header_invalid() -> Self {
        Self::new(
            401,
            AUTHENTICATION_FAILED,
            "Authentication failed. The 'Authorization' header is provided in an invalid format.",
        )
        .with_header("www-authenticate", MISSING_TOKEN_CHALLENGE)
    }

    // NOTE: the `WWW-Authenticate` text on invalid, expired and wrong-tenant tokens has not
    // been captured from ARM; these follow the shape of the missing-header challenge.
    pub fn invalid_authentication_token() -> Self {
        Self::invalid_token_with("The access token is invalid.")
    }

    /// Builds the rejection of a token for another resource.
    /// NOTE: the message is ARM's as remembered, not captured.
    pub fn wrong_audience(audience: &str, accepted: &[&str]) -> Self {
        let accepted: Vec<String> = accepted.iter().map(|a| format!("'{a}'")).collect();
        Self::invalid_token_with(format!(
            "The access token has been obtained for wrong audience or resource '{audience}'. \
             It should exactly match with one of the allowed audiences {}.",
            accepted.join(",")
        ))
    }

    fn invalid_token_with(message: impl Into<String>) -> Self {
        Self::new(401, INVALID_AUTHENTICATION_TOKEN, message).with_header(
            "www-authenticate",
            "Bearer authorization_uri=\"https://login.windows.net/\", error=\"invalid_token\", \
             error_description=\"The access token is invalid.\"",
        )
    }

    pub fn expired_authentication_token(expired_at: OffsetDateTime, now: OffsetDateTime) -> Self {
        Self::new(
            401,
            EXPIRED_AUTHENTICATION_TOKEN,
            format!(
                "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                dotnet_general_time(expired_at),
                dotnet_general_time(now)
            ),
        )
        .with_header(
            "www-authenticate",
            "Bearer authorization_uri=\"https://login.windows.net/\", error=\"invalid_token\", \
             error_description=\"The access token has expired.\"",
        )
    }

    pub fn invalid_authentication_token_tenant(
        token_tenant: &str,
        subscription_tenant: &str,
    ) -> Self {
        Self::new(
            401,
            INVALID_AUTHENTICATION_TOKEN_TENANT,
            format!(
                "The access token is from the wrong issuer 'https://sts.windows.net/{token_tenant}/'. \
                 It must match the tenant 'https://sts.windows.net/{subscription_tenant}/' associated \
                 with this subscription. Please use the authority (URL) \
                 'https://login.windows.net/{subscription_tenant}' to get the token. Note, if the \
                 subscription is transferred to another tenant there is no impact to the services, \
                 but information about new tenant could take time to propagate (up to an hour). If \
                 you just transferred your subscription and see this error message, please try back \
                 later."
            ),
        )
        .with_header(
            "www-authenticate",
            format!(
                "Bearer authorization_uri=\"https://login.windows.net/{subscription_tenant}\", \
                 error=\"invalid_token\", error_description=\"The access token is from the wrong issuer.\""
            ),
        )
    }

    pub fn authorization_failed(object_id: &str, action: &str, scope: &str) -> Self {
        Self::new(
            403,
            AUTHORIZATION_FAILED,
            format!(
                "The client '{object_id}' with object id '{object_id}' does not have authorization \
                 to perform action '{action}' over scope '{scope}' or the scope is invalid. If access \
                 was recently granted, please refresh your credentials."
            ),
        )
    }

    pub fn subscription_not_found(subscription: &str) -> Self {
        Self::new(
            404,
            SUBSCRIPTION_NOT_FOUND,
            format!("The subscription '{subscription}' could not be found."),
        )
        .marked_from_gateway()
    }

    pub fn missing_api_version() -> Self {
        Self::new(
            400,
            MISSING_API_VERSION_PARAMETER,
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    }

    /// Builds the rejection of a body that is not JSON or lacks a property. `detail` names the
    /// parse error.
    pub fn invalid_request_content(detail: impl std::fmt::Display) -> Self {
        Self::new(
            400,
            INVALID_REQUEST_CONTENT,
            format!("The request content was invalid and could not be deserialized: '{detail}'."),
        )
    }

    /// Builds the 404 `InvalidResourceType` ARM returns for a path no resource provider serves.
    /// NOTE: Azure returns `InvalidResourceNamespace` for an unknown namespace, and the fake
    /// does not make that distinction.
    pub fn invalid_resource_type(resource_type: &str, namespace: &str, api_version: &str) -> Self {
        Self::new(
            404,
            INVALID_RESOURCE_TYPE,
            format!(
                "The resource type '{resource_type}' could not be found in the namespace \
                 '{namespace}' for api version '{api_version}'."
            ),
        )
        .marked_from_gateway()
    }

    /// NOTE: code and message are the fake's; no ARM capture of a wrong method exists.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            METHOD_NOT_ALLOWED,
            format!("The requested resource does not support http method '{method}'."),
        )
    }

    pub fn location_required() -> Self {
        Self::new(
            400,
            LOCATION_REQUIRED,
            "The location property is required for this definition.",
        )
    }

    pub fn resource_group_not_found(group: &str) -> Self {
        Self::new(
            404,
            RESOURCE_GROUP_NOT_FOUND,
            format!("Resource group '{group}' could not be found."),
        )
        .marked_from_gateway()
    }

    pub fn resource_group_being_deleted(group: &str) -> Self {
        Self::new(
            409,
            RESOURCE_GROUP_BEING_DELETED,
            format!(
                "The resource group '{group}' is in deprovisioning state and cannot perform this \
                 operation."
            ),
        )
    }

    /// `qualified_type` is the type with its parents' names, e.g.
    /// `Microsoft.ServiceBus/namespaces/ns1/queues` followed by `/q1`.
    pub fn resource_not_found(qualified_name: &str, group: &str) -> Self {
        Self::new(
            404,
            RESOURCE_NOT_FOUND,
            format!(
                "The Resource '{qualified_name}' under resource group '{group}' was not found. For \
                 more details please go to https://aka.ms/ARMResourceNotFoundFix"
            ),
        )
        .marked_from_gateway()
    }

    /// Builds the error for a federated credential whose user-assigned identity does not exist.
    pub fn parent_identity_not_found() -> Self {
        Self::new(
            404,
            PARENT_RESOURCE_NOT_FOUND,
            "The parent user-assigned identity doesn't exist.",
        )
    }

    /// Builds the 409 for a federated credential write that overlaps another write under the
    /// same identity. `identity` is the identity's resource id.
    pub fn concurrent_federated_credential_writes(identity: &str) -> Self {
        Self::new(
            409,
            CONCURRENT_FEDERATED_CREDENTIAL_WRITES,
            format!(
                "Too many Federated Identity Credentials are written concurrently for the managed \
                 identity '{identity}'. Concurrent Federated Identity Credentials writes under the \
                 same managed identity are not supported."
            ),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, BAD_REQUEST, message)
    }

    /// Service Bus appends a correlation id to its validation messages.
    pub fn servicebus_bad_request(message: &str) -> Self {
        Self::bad_request(format!("{message} CorrelationId: {}", uuid::Uuid::new_v4()))
    }

    /// `principal` is printed without dashes, as ARM does.
    pub fn principal_not_found(principal: &str, tenant: &str) -> Self {
        let compact = principal.replace('-', "");
        Self::new(
            400,
            PRINCIPAL_NOT_FOUND,
            format!(
                "Principal {compact} does not exist in the directory {tenant}. Check that you have \
                 the correct principal ID. If you are creating this principal and then immediately \
                 assigning a role, this error might be related to a replication delay. In this \
                 case, set the role assignment principalType property to a value, such as \
                 ServicePrincipal, User, or Group.  See https://aka.ms/docs-principaltype"
            ),
        )
    }

    /// Builds the 409 for a duplicate grant. The message contains the substring "role assignment already exists", which the Azure CLI
    /// matches to treat a repeated `role assignment create` as success.
    pub fn role_assignment_exists(existing_name: &str) -> Self {
        Self::new(
            409,
            ROLE_ASSIGNMENT_EXISTS,
            format!(
                "The role assignment already exists. The ID of the existing role assignment is {}.",
                existing_name.replace('-', "")
            ),
        )
    }

    pub fn role_assignment_not_found(name: &str) -> Self {
        Self::new(
            404,
            ROLE_ASSIGNMENT_NOT_FOUND,
            format!("The role assignment '{name}' is not found."),
        )
    }

    pub fn role_assignment_update_not_permitted() -> Self {
        Self::new(
            400,
            ROLE_ASSIGNMENT_UPDATE_NOT_PERMITTED,
            "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
        )
    }

    pub fn invalid_role_assignment_id(name: &str) -> Self {
        Self::new(
            400,
            INVALID_ROLE_ASSIGNMENT_ID,
            format!(
                "The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."
            ),
        )
    }

    /// `status` is 400 when a role assignment names the definition, 404 on a direct GET.
    pub fn role_definition_does_not_exist(status: u16, id: &str) -> Self {
        Self::new(
            status,
            ROLE_DEFINITION_DOES_NOT_EXIST,
            format!("The specified role definition with ID '{id}' does not exist."),
        )
    }

    /// NOTE: code and message are the fake's, because ARM's response to an unknown operation id
    /// has not been captured.
    pub fn operation_not_found(operation: &str) -> Self {
        Self::new(
            404,
            OPERATION_NOT_FOUND,
            format!("The operation '{operation}' could not be found."),
        )
    }

    /// Builds the response ARM sends for this error.
    pub fn to_template(&self) -> ResponseTemplate {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut template = ResponseTemplate::new(self.status)
            .set_body_raw(body.to_string().into_bytes(), JSON_CONTENT_TYPE);
        for (name, value) in &self.headers {
            template = template.insert_header(*name, value.as_str());
        }
        template
    }
}

/// Formats a UTC time as .NET's general format prints it in ARM messages: `M/d/yyyy h:mm:ss tt`.
fn dotnet_general_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let hour = at.hour();
    let (hour12, meridiem) = match hour {
        0 => (12, "AM"),
        1..=11 => (hour, "AM"),
        12 => (12, "PM"),
        _ => (hour - 12, "PM"),
    };
    format!(
        "{}/{}/{} {}:{:02}:{:02} {}",
        u8::from(at.month()),
        at.day(),
        at.year(),
        hour12,
        at.minute(),
        at.second(),
        meridiem
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn expiry_time_uses_dotnet_general_format() {
        assert_eq!(
            dotnet_general_time(datetime!(2024-01-05 15:04:05 UTC)),
            "1/5/2024 3:04:05 PM"
        );
        assert_eq!(
            dotnet_general_time(datetime!(2024-11-25 00:30:00 UTC)),
            "11/25/2024 12:30:00 AM"
        );
    }

    #[test]
    fn principal_not_found_prints_compact_id() {
        let error = ArmError::principal_not_found("0a1b2c3d-0000-1111-2222-333344445555", "t1");
        assert!(
            error
                .message
                .starts_with("Principal 0a1b2c3d000011112222333344445555 does not")
        );
        assert!(
            error
                .message
                .ends_with("Group.  See https://aka.ms/docs-principaltype")
        );
    }
}
