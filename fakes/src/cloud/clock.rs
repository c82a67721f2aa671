//! The model's clock and the delays that run on it.

use time::{Duration, OffsetDateTime};

/// Wall-clock time plus an offset that scenarios advance, so expiry, propagation delays and
/// long-running operations can be reproduced without waiting.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset: Duration,
}

impl Clock {
    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.offset
    }

    /// Moves the model's time forward by `by`.
    pub fn advance(&mut self, by: Duration) {
        self.offset += by;
    }

    /// Total time the clock has been advanced.
    pub fn offset(&self) -> Duration {
        self.offset
    }
}

/// How long changes take to become visible, as in Azure; zero by default.
#[derive(Clone, Debug, Default)]
pub struct Delays {
    /// A new federated identity credential matches assertions only after this long.
    pub fic_propagation: Duration,
    /// A new role assignment grants its actions only after this long.
    pub role_assignment_propagation: Duration,
    /// A new managed identity is visible to role assignments only after this long.
    pub identity_replication: Duration,
    /// Asynchronous ARM operations stay `InProgress` for this long.
    pub operation_duration: Duration,
}
