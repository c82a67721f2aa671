//! Faults a test injects into the Service Bus broker: a link detached with an error
//! condition, a connection closed, or the namespace reporting itself busy.
//!
//! The table lives in the model so a scenario can fill it while the broker reads it, under
//! the same lock as every other part of the model. Each fault applies at one point of the
//! AMQP exchange, for a number of matching operations or with a probability.

use rand::Rng;

/// Condition Service Bus sends when it throttles a namespace (`ServerBusyException` in the
/// .NET SDK).
pub const SERVER_BUSY: &str = "com.microsoft:server-busy";
/// Description sent with [`SERVER_BUSY`] when the fault gives none; the wording follows the
/// service's throttling message.
// NOTE: the wording is from SDK documentation of ServerBusyException, not from a captured
// frame.
pub const SERVER_BUSY_DESCRIPTION: &str = "The request was terminated because the entity is being throttled. Please wait 2 seconds and try again.";

/// Where in the AMQP exchange a fault applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmqpFaultPoint {
    /// The attach of a sender or receiver link to an entity (not `$cbs`).
    Attach,
    /// A message transfer on a sender link.
    Transfer,
}

/// What the broker does instead of the normal operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmqpFaultAction {
    /// Refuses the attach with a detach carrying the error, or rejects the transfer.
    Detach,
    /// Closes the whole connection with the error.
    CloseConnection,
}

/// One entry of the fault table.
#[derive(Clone, Debug)]
pub struct AmqpFault {
    pub point: AmqpFaultPoint,
    pub action: AmqpFaultAction,
    pub condition: String,
    pub description: String,
    /// Operations still to fail; `None` fails every matching one.
    pub remaining: Option<u32>,
    /// Chance from 0 to 1 that a matching operation fails.
    pub probability: f64,
}

/// The error the broker sends in place of the operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectedFault {
    pub action: AmqpFaultAction,
    pub condition: String,
    pub description: String,
}

/// The broker's fault table; empty unless a test adds faults.
#[derive(Clone, Debug, Default)]
pub struct AmqpFaults {
    faults: Vec<AmqpFault>,
}

impl AmqpFaults {
    pub fn add(&mut self, fault: AmqpFault) {
        self.faults.push(fault);
    }

    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    /// Returns the fault for an operation at `point`, if one applies, and counts it; a fault
    /// whose count reaches zero is removed.
    pub fn take(&mut self, point: AmqpFaultPoint) -> Option<InjectedFault> {
        let position = self.faults.iter().position(|fault| {
            fault.point == point
                && (fault.probability >= 1.0 || rand::rng().random_bool(fault.probability))
        })?;
        let fault = &mut self.faults[position];
        let injected = InjectedFault {
            action: fault.action,
            condition: fault.condition.clone(),
            description: fault.description.clone(),
        };
        if let Some(remaining) = fault.remaining.as_mut() {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                self.faults.remove(position);
            }
        }
        Some(injected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(remaining: Option<u32>) -> AmqpFault {
        AmqpFault {
            point: AmqpFaultPoint::Attach,
            action: AmqpFaultAction::Detach,
            condition: SERVER_BUSY.into(),
            description: SERVER_BUSY_DESCRIPTION.into(),
            remaining,
            probability: 1.0,
        }
    }

    #[test]
    fn counted_fault_applies_that_many_times() {
        let mut faults = AmqpFaults::default();
        faults.add(fault(Some(2)));
        assert!(faults.take(AmqpFaultPoint::Transfer).is_none());
        assert!(faults.take(AmqpFaultPoint::Attach).is_some());
        assert!(faults.take(AmqpFaultPoint::Attach).is_some());
        assert!(faults.take(AmqpFaultPoint::Attach).is_none());
        assert!(faults.is_empty());
    }

    #[test]
    fn uncounted_fault_stays() {
        let mut faults = AmqpFaults::default();
        faults.add(fault(None));
        for _ in 0..3 {
            assert!(faults.take(AmqpFaultPoint::Attach).is_some());
        }
    }

    #[test]
    fn zero_probability_never_applies() {
        let mut faults = AmqpFaults::default();
        faults.add(AmqpFault {
            probability: 0.0,
            ..fault(None)
        });
        assert!(faults.take(AmqpFaultPoint::Attach).is_none());
    }
}
