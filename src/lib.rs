//! The `xtenant` library: the demo workload that the embedded cluster runs for the
//! Service Bus sample image.

pub mod demo;
pub mod serve;
