//! Topics on a live connection: renewing every subscription once authenticated (with
//! `since_offset` and `epoch` where a topic's history allows recovery), keeping the
//! server's set equal to the registry's as the application subscribes and drops
//! handles, sending publishes, and handing what the server answers or delivers to the
//! registry ([`crate::topics`]).
//!
//! Topic messages never wait for the document catch-up: they are handled as they
//! arrive, also between its pages. A subscription the server ends on its own (the access
//! rules changed: `unsubscribed` with a `reason`) ends here too, with a
//! [`TopicEvent::Refused`](crate::TopicEvent) for its handles.

use sync_core::protocol::{
    ClientEnvelope, ClientMessage, Publish, RequestId, ServerEnvelope, ServerMessage, Subscribe, TopicRequest,
};
use tokio::sync::OwnedSemaphorePermit;

use super::Session;
use crate::error::Result;
use crate::topics::Refusal;

/// A topic request awaiting the server's answer on this connection.
pub(super) enum Pending {
    /// `subscribe` of a registry entry.
    Subscribe {
        /// The name or pattern.
        text: String,
        /// The registry entry it was sent for.
        id: u64,
        /// Sent with `since_offset`.
        asked_recovery: bool,
    },
    /// `unsubscribe`; nothing waits for it.
    Unsubscribe,
    /// `publish`: the application may await the answer.
    Publish {
        reply: tokio::sync::oneshot::Sender<Result<sync_core::protocol::Published>>,
        _permit: OwnedSemaphorePermit,
    },
}

impl Session {
    /// Queues what makes the server's subscriptions equal the registry's, and the
    /// publishes the application queued.
    pub(super) fn sync_topics(&mut self) {
        let topics = std::sync::Arc::clone(self.shared.topics());
        let changes = topics.changes(&mut self.topics_held);
        for text in changes.unsubscribe {
            let request_id = self.request_id("unsubscribe");
            self.topic_requests.insert(request_id.clone(), Pending::Unsubscribe);
            let message = ClientMessage::Unsubscribe(TopicRequest { topic: text });
            self.outbox.push(ClientEnvelope::with_id(message, RequestId::Str(request_id)));
        }
        for (text, id, since) in changes.subscribe {
            let request_id = self.request_id("subscribe");
            let asked_recovery = since.is_some();
            let (since_offset, epoch) = since.map_or((None, None), |(offset, epoch)| (Some(offset), Some(epoch)));
            let message = ClientMessage::Subscribe(Subscribe { topic: text.clone(), since_offset, epoch });
            self.topic_requests.insert(request_id.clone(), Pending::Subscribe { text, id, asked_recovery });
            self.outbox.push(ClientEnvelope::with_id(message, RequestId::Str(request_id)));
        }
        for publish in topics.take_publishes() {
            let request_id = self.request_id("publish");
            let message =
                ClientMessage::Publish(Publish { topic: publish.topic, data: publish.data, echo: publish.echo });
            self.topic_requests
                .insert(request_id.clone(), Pending::Publish { reply: publish.reply, _permit: publish.permit });
            self.outbox.push(ClientEnvelope::with_id(message, RequestId::Str(request_id)));
        }
    }

    /// Handles a topic message (a delivery, or the answer to a topic request); gives
    /// any other message back.
    pub(super) fn on_topic_message(&mut self, envelope: ServerEnvelope) -> Option<ServerEnvelope> {
        let pending = match &envelope.request_id {
            Some(RequestId::Str(id)) => match &envelope.message {
                ServerMessage::Subscribed(_)
                | ServerMessage::Unsubscribed(_)
                | ServerMessage::Published(_)
                | ServerMessage::Error(_) => self.topic_requests.remove(id),
                _ => None,
            },
            _ => None,
        };
        let topics = self.shared.topics();
        match (envelope.message, pending) {
            (ServerMessage::Data(data), _) => topics.deliver(data),
            (ServerMessage::Subscribed(reply), Some(Pending::Subscribe { id, asked_recovery, .. })) => {
                topics.subscribed(&reply, id, asked_recovery);
            }
            (ServerMessage::Published(published), Some(Pending::Publish { reply, .. })) => {
                let _ = reply.send(Ok(published));
            }
            (ServerMessage::Error(e), Some(Pending::Subscribe { text, id, .. })) => {
                tracing::debug!(topic = %text, code = %e.code, "subscription refused");
                self.topics_held.remove(&text);
                topics.refused(&text, Some(id), Refusal { code: e.code, message: e.message });
            }
            (ServerMessage::Error(e), Some(Pending::Publish { reply, .. })) => {
                let _ = reply.send(Err(crate::error::SyncError::Server { code: e.code, message: e.message }));
            }
            (ServerMessage::Error(e), Some(Pending::Unsubscribe)) => {
                tracing::debug!(code = %e.code, message = %e.message, "unsubscribe refused");
            }
            // Pushed: the server ended a subscription (the access rules changed).
            (ServerMessage::Unsubscribed(ended), None) if ended.reason.is_some() => {
                let reason = ended.reason.unwrap_or_default();
                let code = serde_json::from_value(serde_json::Value::String(reason.clone()))
                    .unwrap_or(sync_core::ErrorCode::Forbidden);
                let message = format!("the server ended the subscription {:?}: {reason}", ended.topic);
                self.topics_held.remove(&ended.topic);
                topics.refused(&ended.topic, None, Refusal { code, message });
            }
            // Answers to topic requests that are not (or no longer) expected.
            (ServerMessage::Subscribed(_) | ServerMessage::Unsubscribed(_) | ServerMessage::Published(_), _) => {}
            (message, None) => return Some(ServerEnvelope { message, request_id: envelope.request_id }),
            (message, Some(_)) => {
                tracing::debug!(kind = message.type_name(), "unexpected answer to a topic request");
            }
        }
        None
    }
}
