//! The model's clock and the delays that run on it.

use time::{Duration, OffsetDateTime};

/// Largest total advance of the clock: 1,000 years.
pub const MAX_OFFSET: Duration = Duration::days(365_000);

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

    /// Moves the model's time forward by `by`. The total offset stops at [`MAX_OFFSET`], so
    /// the model's time stays within the range dates can hold.
    pub fn advance(&mut self, by: Duration) {
        self.offset = self.offset.saturating_add(by).min(MAX_OFFSET);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_advance_stops_at_max_offset() {
        let mut clock = Clock::default();
        clock.advance(Duration::MAX);
        clock.advance(Duration::MAX);
        assert_eq!(clock.offset(), MAX_OFFSET);
        assert!(clock.now().year() > 3000);
    }
}
