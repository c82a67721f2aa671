//! The xtenant harness: scenario files, the runner that drives them, targets (the fakes, or
//! Azure) and clusters (embedded, or kind).

pub mod client;
pub mod cluster;
pub mod drift;
pub mod runner;
pub mod scenario;
pub mod target;
