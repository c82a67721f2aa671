//! Fakes of the Azure services in the cross-tenant workload identity flow, over their real
//! protocols: Azure Resource Manager, Microsoft Entra ID, a cluster's OIDC issuer and the
//! Service Bus data plane, all reading and writing one in-memory [`cloud::Cloud`].

pub mod arm;
pub mod cloud;
pub mod crypto;
pub mod entra;
pub mod http;
pub mod issuer;
pub mod jwt;
pub mod server;
pub mod servicebus;
pub mod tls;

pub use server::{Endpoints, Fakes, FakesConfig, StartError};
