//! The one error-code enum shared by every API. Codes are stable on the wire (`u16`); `0` is success.
//! Each code says whether a client may retry the same request (`retriable`) and carries a human message.

/// A protocol error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    None = 0,
    /// An unexpected server error; the message says more.
    Unknown = 1,
    /// A record batch failed its CRC or layout check.
    CorruptMessage = 2,
    UnknownTopicOrPartition = 3,
    OffsetOutOfRange = 4,
    /// This broker does not lead the partition; the response carries a leader hint when one is known.
    NotLeader = 5,
    LeaderNotAvailable = 6,
    RequestTimedOut = 7,
    MessageTooLarge = 8,
    InvalidRequest = 9,
    UnsupportedVersion = 10,
    UnsupportedApi = 11,
    TopicAlreadyExists = 12,
    InvalidTopic = 13,
    InvalidPartitions = 14,
    InvalidReplicationFactor = 15,
    InvalidConfig = 16,
    NotEnoughReplicas = 17,
    /// The connection has too many requests in flight, or the broker is overloaded.
    Throttled = 18,
    /// The partition's storage failed (fsync error, disk full); it stopped taking writes.
    StorageError = 19,
    BrokerShuttingDown = 20,
    CoordinatorNotAvailable = 21,
    NotCoordinator = 22,
    UnknownMemberId = 23,
    FencedMemberEpoch = 24,
    GroupNotEmpty = 25,
    RebalanceInProgress = 26,
    InvalidCommitOffset = 27,
    DuplicateSequence = 28,
    OutOfOrderSequence = 29,
    ProducerFenced = 30,
    UnknownProducerId = 31,
    NotController = 32,
    InvalidRecord = 33,
    GroupIdNotFound = 34,
}

impl ErrorCode {
    /// Decodes a wire code; unknown codes map to [`ErrorCode::Unknown`] so old clients keep working.
    pub fn from_u16(code: u16) -> ErrorCode {
        use ErrorCode::*;
        const ALL: [ErrorCode; 35] = [
            None,
            Unknown,
            CorruptMessage,
            UnknownTopicOrPartition,
            OffsetOutOfRange,
            NotLeader,
            LeaderNotAvailable,
            RequestTimedOut,
            MessageTooLarge,
            InvalidRequest,
            UnsupportedVersion,
            UnsupportedApi,
            TopicAlreadyExists,
            InvalidTopic,
            InvalidPartitions,
            InvalidReplicationFactor,
            InvalidConfig,
            NotEnoughReplicas,
            Throttled,
            StorageError,
            BrokerShuttingDown,
            CoordinatorNotAvailable,
            NotCoordinator,
            UnknownMemberId,
            FencedMemberEpoch,
            GroupNotEmpty,
            RebalanceInProgress,
            InvalidCommitOffset,
            DuplicateSequence,
            OutOfOrderSequence,
            ProducerFenced,
            UnknownProducerId,
            NotController,
            InvalidRecord,
            GroupIdNotFound,
        ];
        ALL.get(code as usize).copied().unwrap_or(Unknown)
    }

    pub fn as_u16(self) -> u16 {
        self as u16
    }

    pub fn is_ok(self) -> bool {
        self == ErrorCode::None
    }

    /// True when the same request may succeed if retried (after a metadata refresh for leader errors).
    pub fn retriable(self) -> bool {
        use ErrorCode::*;
        matches!(
            self,
            NotLeader
                | LeaderNotAvailable
                | RequestTimedOut
                | NotEnoughReplicas
                | Throttled
                | StorageError
                | BrokerShuttingDown
                | CoordinatorNotAvailable
                | NotCoordinator
                | RebalanceInProgress
                | NotController
                | OutOfOrderSequence
        )
    }

    /// The SCREAMING_SNAKE name printed by the CLI (`{"error":"NOT_LEADER",...}`).
    pub fn name(self) -> &'static str {
        use ErrorCode::*;
        match self {
            None => "NONE",
            Unknown => "UNKNOWN_SERVER_ERROR",
            CorruptMessage => "CORRUPT_MESSAGE",
            UnknownTopicOrPartition => "UNKNOWN_TOPIC_OR_PARTITION",
            OffsetOutOfRange => "OFFSET_OUT_OF_RANGE",
            NotLeader => "NOT_LEADER",
            LeaderNotAvailable => "LEADER_NOT_AVAILABLE",
            RequestTimedOut => "REQUEST_TIMED_OUT",
            MessageTooLarge => "MESSAGE_TOO_LARGE",
            InvalidRequest => "INVALID_REQUEST",
            UnsupportedVersion => "UNSUPPORTED_VERSION",
            UnsupportedApi => "UNSUPPORTED_API",
            TopicAlreadyExists => "TOPIC_ALREADY_EXISTS",
            InvalidTopic => "INVALID_TOPIC",
            InvalidPartitions => "INVALID_PARTITIONS",
            InvalidReplicationFactor => "INVALID_REPLICATION_FACTOR",
            InvalidConfig => "INVALID_CONFIG",
            NotEnoughReplicas => "NOT_ENOUGH_REPLICAS",
            Throttled => "THROTTLED",
            StorageError => "STORAGE_ERROR",
            BrokerShuttingDown => "BROKER_SHUTTING_DOWN",
            CoordinatorNotAvailable => "COORDINATOR_NOT_AVAILABLE",
            NotCoordinator => "NOT_COORDINATOR",
            UnknownMemberId => "UNKNOWN_MEMBER_ID",
            FencedMemberEpoch => "FENCED_MEMBER_EPOCH",
            GroupNotEmpty => "GROUP_NOT_EMPTY",
            RebalanceInProgress => "REBALANCE_IN_PROGRESS",
            InvalidCommitOffset => "INVALID_COMMIT_OFFSET",
            DuplicateSequence => "DUPLICATE_SEQUENCE",
            OutOfOrderSequence => "OUT_OF_ORDER_SEQUENCE",
            ProducerFenced => "PRODUCER_FENCED",
            UnknownProducerId => "UNKNOWN_PRODUCER_ID",
            NotController => "NOT_CONTROLLER",
            InvalidRecord => "INVALID_RECORD",
            GroupIdNotFound => "GROUP_ID_NOT_FOUND",
        }
    }

    /// A default human message for the code; responses may carry a more specific one.
    pub fn message(self) -> &'static str {
        use ErrorCode::*;
        match self {
            None => "success",
            Unknown => "unexpected server error",
            CorruptMessage => "record batch failed its CRC or layout check",
            UnknownTopicOrPartition => "this topic or partition does not exist",
            OffsetOutOfRange => "the requested offset is outside the partition's log",
            NotLeader => "this broker is not the partition's leader",
            LeaderNotAvailable => "the partition has no leader right now",
            RequestTimedOut => "the request timed out on the broker",
            MessageTooLarge => "the request or batch is larger than the broker accepts",
            InvalidRequest => "the request is malformed",
            UnsupportedVersion => "this API version is not supported",
            UnsupportedApi => "this API is not supported",
            TopicAlreadyExists => "a topic with this name already exists",
            InvalidTopic => "the topic name is invalid",
            InvalidPartitions => "the partition count is invalid",
            InvalidReplicationFactor => "the replication factor is invalid for this cluster",
            InvalidConfig => "a configuration key or value is invalid",
            NotEnoughReplicas => "not enough replicas are in sync to accept the write",
            Throttled => "too many requests in flight; slow down and retry",
            StorageError => "the partition's storage failed",
            BrokerShuttingDown => "the broker is shutting down",
            CoordinatorNotAvailable => "the group coordinator is not available",
            NotCoordinator => "this broker is not the group's coordinator",
            UnknownMemberId => "the group member is not known",
            FencedMemberEpoch => "the member epoch is stale; rejoin the group",
            GroupNotEmpty => "the group has live members",
            RebalanceInProgress => "the group is rebalancing",
            InvalidCommitOffset => "the offset to commit is invalid",
            DuplicateSequence => "this batch was already written",
            OutOfOrderSequence => "the producer sequence number is out of order",
            ProducerFenced => "a newer producer with the same id exists",
            UnknownProducerId => "the producer id is not known",
            NotController => "this broker is not the controller",
            InvalidRecord => "a record in the batch is invalid",
            GroupIdNotFound => "the group does not exist",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_have_names() {
        for c in 0..=40u16 {
            let e = ErrorCode::from_u16(c);
            if c <= 34 {
                assert_eq!(e.as_u16(), c);
            } else {
                assert_eq!(e, ErrorCode::Unknown);
            }
            assert!(!e.name().is_empty());
            assert!(!e.message().is_empty());
        }
        assert!(ErrorCode::NotLeader.retriable());
        assert!(!ErrorCode::CorruptMessage.retriable());
    }
}
