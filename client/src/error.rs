//! The client's one error type, [`ClientError`], and its retry classification.
//!
//! Invariants: every error a broker reports keeps its [`ErrorCode`] and message; [`ClientError::retriable`] is
//! the single place that decides whether the client may try again (the producer's retry loop and the
//! consumer's fetch loop both use it); [`ClientError::code_name`] gives the SCREAMING_SNAKE name the CLI prints.
//! The type is `Clone` so one failure can be handed to every record of a batch.

use std::net::SocketAddr;

use runnel_protocol::wire::DecodeError;
use runnel_protocol::ErrorCode;

/// Everything that can go wrong in the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The broker answered with an error code (request-level or for one partition/topic).
    #[error("{code}: {message}")]
    Broker { code: ErrorCode, message: String },
    /// A TCP connection could not be opened (refused, unreachable, or the connect timeout passed).
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    /// No address of the bootstrap list answered.
    #[error("no broker reachable (tried {tried}): {last}")]
    NoBrokerReachable { tried: String, last: String },
    /// An open connection failed or was closed while a request was pending.
    #[error("connection to {addr} lost: {message}")]
    ConnectionLost { addr: SocketAddr, message: String },
    /// No response within the request timeout.
    #[error("request timed out after {ms} ms ({what})")]
    Timeout { what: String, ms: u64 },
    /// The broker's bytes could not be decoded, or the response does not fit the request.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The broker does not speak a version of an API this client needs.
    #[error("broker does not support {api} version {version}")]
    UnsupportedVersion { api: String, version: u16 },
    /// A record larger than the batch or buffer limits.
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },
    /// The caller asked for something impossible (bad partition, bad argument).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The producer or consumer was closed.
    #[error("the client is closed")]
    Closed,
}

impl ClientError {
    /// A broker error with the code's default message when the broker sent none.
    pub fn broker(code: ErrorCode, message: Option<String>) -> ClientError {
        ClientError::Broker {
            code,
            message: message
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| code.message().to_string()),
        }
    }

    pub(crate) fn decode(e: DecodeError) -> ClientError {
        ClientError::Protocol(format!("cannot decode response: {e}"))
    }

    /// The broker's error code, if the broker reported this error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when the same request may succeed later (after a metadata refresh and a backoff).
    ///
    /// Broker codes follow [`ErrorCode::retriable`], plus `UNKNOWN_TOPIC_OR_PARTITION`: a freshly created topic
    /// may not have reached the broker that leads it yet, so (as in Kafka) it is retried a bounded number of
    /// times. Network failures and timeouts are retriable; bad input, protocol violations and a closed client
    /// are not.
    pub fn retriable(&self) -> bool {
        match self {
            ClientError::Broker { code, .. } => {
                code.retriable() || *code == ErrorCode::UnknownTopicOrPartition
            }
            ClientError::Connect { .. }
            | ClientError::NoBrokerReachable { .. }
            | ClientError::ConnectionLost { .. }
            | ClientError::Timeout { .. } => true,
            ClientError::Protocol(_)
            | ClientError::UnsupportedVersion { .. }
            | ClientError::RecordTooLarge { .. }
            | ClientError::InvalidArgument(_)
            | ClientError::Closed => false,
        }
    }

    /// True when the request may or may not have taken effect: it was sent and then timed out or lost its
    /// connection, or the broker said `REQUEST_TIMED_OUT` (the write may still land). Retrying such a produce
    /// can write the batch twice (there is no idempotent producer yet).
    pub fn ambiguous(&self) -> bool {
        match self {
            ClientError::Timeout { .. } | ClientError::ConnectionLost { .. } => true,
            ClientError::Broker { code, .. } => *code == ErrorCode::RequestTimedOut,
            _ => false,
        }
    }

    /// True when cached metadata (leaders, partition counts) should be refreshed before retrying.
    pub fn needs_metadata_refresh(&self) -> bool {
        match self {
            ClientError::Broker { code, .. } => matches!(
                code,
                ErrorCode::NotLeader
                    | ErrorCode::LeaderNotAvailable
                    | ErrorCode::UnknownTopicOrPartition
                    | ErrorCode::BrokerShuttingDown
                    | ErrorCode::NotController
            ),
            ClientError::Connect { .. }
            | ClientError::NoBrokerReachable { .. }
            | ClientError::ConnectionLost { .. }
            | ClientError::Timeout { .. } => true,
            _ => false,
        }
    }

    /// The SCREAMING_SNAKE name the CLI prints in `{"error": ...}`: the broker's code name, or a client-side
    /// name for failures that never reached a broker.
    pub fn code_name(&self) -> &'static str {
        match self {
            ClientError::Broker { code, .. } => code.name(),
            ClientError::Connect { .. }
            | ClientError::NoBrokerReachable { .. }
            | ClientError::ConnectionLost { .. } => "NETWORK_ERROR",
            ClientError::Timeout { .. } => ErrorCode::RequestTimedOut.name(),
            ClientError::Protocol(_) => "PROTOCOL_ERROR",
            ClientError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion.name(),
            ClientError::RecordTooLarge { .. } => ErrorCode::MessageTooLarge.name(),
            ClientError::InvalidArgument(_) => "INVALID_ARGUMENT",
            ClientError::Closed => "CLIENT_CLOSED",
        }
    }

    /// The human part of the error, without the code name (for `{"message": ...}`).
    pub fn message(&self) -> String {
        match self {
            ClientError::Broker { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_classification() {
        for c in [
            ErrorCode::NotLeader,
            ErrorCode::LeaderNotAvailable,
            ErrorCode::RequestTimedOut,
            ErrorCode::Throttled,
            ErrorCode::UnknownTopicOrPartition,
        ] {
            assert!(ClientError::broker(c, None).retriable(), "{c}");
        }
        for c in [
            ErrorCode::CorruptMessage,
            ErrorCode::MessageTooLarge,
            ErrorCode::InvalidRequest,
            ErrorCode::TopicAlreadyExists,
            ErrorCode::OffsetOutOfRange,
            ErrorCode::InvalidRecord,
        ] {
            assert!(!ClientError::broker(c, None).retriable(), "{c}");
        }
        assert!(ClientError::Timeout {
            what: "produce".into(),
            ms: 1
        }
        .retriable());
        assert!(!ClientError::Closed.retriable());
        assert!(ClientError::broker(ErrorCode::RequestTimedOut, None).ambiguous());
        assert!(!ClientError::broker(ErrorCode::NotLeader, None).ambiguous());
        assert!(!ClientError::Connect {
            addr: "a".into(),
            message: "refused".into()
        }
        .ambiguous());
        assert!(!ClientError::Protocol("x".into()).retriable());
        assert!(!ClientError::InvalidArgument("x".into()).retriable());
    }

    #[test]
    fn names_and_messages() {
        let e = ClientError::broker(ErrorCode::NotLeader, None);
        assert_eq!(e.code_name(), "NOT_LEADER");
        assert_eq!(e.message(), ErrorCode::NotLeader.message());
        assert_eq!(e.code(), Some(ErrorCode::NotLeader));
        let e = ClientError::broker(ErrorCode::InvalidTopic, Some("bad name".into()));
        assert_eq!(e.to_string(), "INVALID_TOPIC: bad name");
        assert!(!e.needs_metadata_refresh());
        assert_eq!(
            ClientError::Connect {
                addr: "x".into(),
                message: "refused".into()
            }
            .code_name(),
            "NETWORK_ERROR"
        );
    }
}
