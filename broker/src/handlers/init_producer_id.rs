//! InitProducerId: a new producer id for an idempotent producer, from this broker's reserved block (see
//! [`crate::metadata::Registry::next_producer_id`]). Any broker answers; ids are unique in the cluster and
//! never reused across restarts. Every producer id starts at epoch 0.

use runnel_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};
use runnel_protocol::ErrorCode;

use crate::server::Broker;

/// The epoch of a new producer id (there are no transactions to fence yet).
pub const NEW_PRODUCER_EPOCH: i16 = 0;

pub async fn handle(broker: &Broker, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let fail = |code: ErrorCode, message: String| InitProducerIdResponse {
        error_code: code.as_u16(),
        error_message: Some(message),
        producer_id: -1,
        producer_epoch: -1,
    };
    if let Some(t) = req.transactional_id {
        return fail(
            ErrorCode::InvalidRequest,
            format!("transactions are not supported (transactional id {t:?})"),
        );
    }
    match broker.registry.next_producer_id().await {
        Ok(id) => InitProducerIdResponse {
            error_code: 0,
            error_message: None,
            producer_id: id,
            producer_epoch: NEW_PRODUCER_EPOCH,
        },
        Err(e) => fail(
            e.code,
            format!("cannot reserve producer ids: {}", e.message),
        ),
    }
}
