//! MQTT quality-of-service levels.

use std::fmt;

/// Delivery guarantee of a publish or a subscription.
///
/// Courier's default for both is [`QoS::AtLeastOnce`] (the Go original defaults to
/// `QOSZero`): a library that promises not to lose messages should not pick the one
/// level that may lose them unless asked to.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(into = "u8", try_from = "u8")]
pub enum QoS {
    /// At most once: fire and forget, no acknowledgement.
    AtMostOnce = 0,
    /// At least once: acknowledged with PUBACK, may be delivered more than once.
    #[default]
    AtLeastOnce = 1,
    /// Exactly once: a four-way handshake (PUBREC, PUBREL, PUBCOMP).
    ExactlyOnce = 2,
}

impl QoS {
    /// The numeric level (0, 1 or 2).
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A number that is not a QoS level (only 0, 1 and 2 are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid QoS level {0}: must be 0, 1 or 2")]
pub struct InvalidQoS(pub u8);

impl TryFrom<u8> for QoS {
    type Error = InvalidQoS;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            other => Err(InvalidQoS(other)),
        }
    }
}

impl From<QoS> for u8 {
    fn from(qos: QoS) -> u8 {
        qos.as_u8()
    }
}

impl fmt::Display for QoS {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QoS {}", self.as_u8())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_and_from_numbers() {
        for (n, q) in [
            (0, QoS::AtMostOnce),
            (1, QoS::AtLeastOnce),
            (2, QoS::ExactlyOnce),
        ] {
            assert_eq!(QoS::try_from(n), Ok(q));
            assert_eq!(u8::from(q), n);
        }
        assert_eq!(QoS::try_from(3), Err(InvalidQoS(3)));
    }

    #[test]
    fn serializes_as_a_number() {
        assert_eq!(
            serde_json::to_string(&QoS::ExactlyOnce).ok().as_deref(),
            Some("2")
        );
        assert!(serde_json::from_str::<QoS>("3").is_err());
    }
}
