//! Fakes of the Azure services in the cross-tenant workload identity flow, over their real
//! protocols: Azure Resource Manager, Microsoft Entra ID, a cluster's OIDC issuer and the
//! Service Bus data plane, all reading and writing one in-memory [`cloud::Cloud`].

pub mod cloud;
pub mod crypto;
pub mod jwt;
pub mod servicebus;
