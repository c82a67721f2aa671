//! Authentication and authorization of ARM requests.
//!
//! ARM accepts a bearer token from Entra ID for the management audience, issued by the tenant
//! the addressed subscription trusts, and allows an action when one of the caller's role
//! assignments at or above the scope grants it.

use wiremock::Request;

use super::errors::ArmError;
use crate::cloud::{
    ARM_AUDIENCES, Cloud, ObjectId, ResourceId, Subscription, TenantId, TokenRejection,
};
use crate::http::bearer_token;

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub object_id: ObjectId,
    pub tenant: TenantId,
}

/// Verifies the bearer token: present, signed by a tenant of the cloud, for an ARM audience,
/// and within its lifetime.
pub fn authenticate(cloud: &Cloud, request: &Request) -> Result<Caller, ArmError> {
    let token = match bearer_token(request) {
        Some(token) => token,
        None if request.headers.contains_key("authorization") => {
            return Err(ArmError::authorization_header_invalid());
        }
        None => return Err(ArmError::authentication_failed()),
    };
    let claims = cloud
        .verify_access_token(token, ARM_AUDIENCES)
        .map_err(|rejection| match rejection {
            TokenRejection::Expired { expired_at, now } => {
                ArmError::expired_authentication_token(expired_at, now)
            }
            TokenRejection::WrongAudience(audience) => {
                ArmError::wrong_audience(&audience, ARM_AUDIENCES)
            }
            TokenRejection::Malformed(_)
            | TokenRejection::UnknownIssuer(_)
            | TokenRejection::BadSignature
            | TokenRejection::NotYetValid { .. } => ArmError::invalid_authentication_token(),
        })?;
    Ok(Caller {
        object_id: claims.object_id,
        tenant: claims.tenant,
    })
}

/// Finds the subscription and checks that the caller's token comes from its tenant.
pub fn subscription<'c>(
    cloud: &'c Cloud,
    caller: &Caller,
    subscription: &str,
) -> Result<&'c Subscription, ArmError> {
    let found = cloud
        .subscription(subscription)
        .ok_or_else(|| ArmError::subscription_not_found(subscription))?;
    if found.tenant != caller.tenant {
        return Err(ArmError::invalid_authentication_token_tenant(
            caller.tenant.as_str(),
            found.tenant.as_str(),
        ));
    }
    Ok(found)
}

/// Checks that the caller's role assignments allow `action` at `scope`.
pub fn authorize(
    cloud: &Cloud,
    caller: &Caller,
    scope: &ResourceId,
    action: &str,
) -> Result<(), ArmError> {
    if cloud.has_action(&caller.object_id, scope, action) {
        return Ok(());
    }
    Err(ArmError::authorization_failed(
        caller.object_id.as_str(),
        action,
        scope.as_str(),
    ))
}
