//! Server messages as WebSocket text frames: each message is serialized once, with the
//! `request_id` it answers, into shared bytes that every recipient's queue can hold.

use bytes::Bytes;
use sync_core::protocol::{RequestId, ServerMessage};

/// The text of `message`, echoing `request_id` when it answers a request.
pub(crate) fn encode(message: &ServerMessage, request_id: Option<RequestId>) -> Bytes {
    #[derive(serde::Serialize)]
    struct EnvelopeRef<'a> {
        #[serde(flatten)]
        message: &'a ServerMessage,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<RequestId>,
    }
    metrics::counter!(crate::metrics::MESSAGES_SENT, "type" => message.type_name()).increment(1);
    // Every server message serializes without failure: its fields are strings, numbers
    // and JSON values, none of which a JSON serializer refuses.
    Bytes::from(serde_json::to_vec(&EnvelopeRef { message, request_id }).unwrap_or_default())
}
