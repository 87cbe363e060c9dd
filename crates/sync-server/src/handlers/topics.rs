//! `subscribe`, `unsubscribe`, `publish` (alias `sync`) and `connect` (PROTOCOL.md §4.1):
//! the session's side of topics; the registry and its fan-out are `crate::topics`.
//!
//! Guarantees: every refusal is an `error` echoing the `request_id` (`invalid_message`
//! for a bad name, `forbidden`, `payload_too_large`) and the connection stays open;
//! recovered messages follow `subscribed` and precede every live message of the topic;
//! `unsubscribed` follows every message the subscription delivered.

use sync_core::ErrorCode;
use sync_core::Timestamp;
use sync_core::protocol::{
    Connect, Connected, Publish, Published, RequestId, ServerMessage, Subscribe, TopicReply, TopicRequest,
};
use sync_core::topic::{self, Pattern};

use super::Ctx;
use crate::connection::Ending;
use crate::monitor::activity;
use crate::topics::{Refusal, TopicMessage};

/// `subscribe`: `subscribed`, then the recovered `data` messages.
pub(super) fn subscribe(ctx: &mut Ctx<'_>, message: Subscribe, request_id: Option<RequestId>) -> Result<(), Ending> {
    let pattern = match Pattern::parse(&message.topic) {
        Ok(pattern) => pattern,
        Err(e) => {
            ctx.send_error(ErrorCode::InvalidMessage, format!("field `topic`: {e}"), request_id);
            return Ok(());
        }
    };
    let since = message.since_offset.map(|offset| (offset, message.epoch.as_deref()));
    let max = ctx.state.config.limits.max_subscriptions;
    match ctx.state.topics.subscribe(ctx.session.topics.member(), &pattern, since, max) {
        Ok(answer) => {
            activity!(
                "SUBSCRIBE",
                session = ctx.conn.id,
                "session {} subscribed to {}{}",
                ctx.conn.id,
                pattern,
                match answer.reply.recovered {
                    Some(true) => format!(" (recovered {} messages)", answer.recovered.len()),
                    Some(false) => " (nothing recovered)".to_owned(),
                    None => String::new(),
                }
            );
            ctx.send(&ServerMessage::Subscribed(answer.reply), request_id);
            for frame in answer.recovered {
                ctx.conn.send_frame(frame);
            }
        }
        Err(Refusal::Forbidden(why)) => ctx.send_error(ErrorCode::Forbidden, why, request_id),
        Err(Refusal::TooMany(max)) => ctx.send_error(
            ErrorCode::InvalidMessage,
            format!(
                "this session holds {max} subscriptions, the limit (`limits.max_subscriptions`); unsubscribe first"
            ),
            request_id,
        ),
    }
    Ok(())
}

/// `unsubscribe`: `unsubscribed`, after every message the subscription delivered.
/// Unsubscribing from what the session does not hold is answered the same way.
pub(super) fn unsubscribe(
    ctx: &mut Ctx<'_>,
    message: TopicRequest,
    request_id: Option<RequestId>,
) -> Result<(), Ending> {
    let held = ctx.state.topics.unsubscribe(ctx.session.topics.member(), &message.topic);
    if held {
        activity!("SUBSCRIBE", session = ctx.conn.id, "session {} unsubscribed from {}", ctx.conn.id, message.topic);
        // Nothing of the topic enters the queue any more: what is there goes out first.
        ctx.session.drain_all(ctx.conn)?;
    }
    ctx.send(&ServerMessage::Unsubscribed(TopicReply { topic: message.topic, reason: None }), request_id);
    Ok(())
}

/// `publish`: delivers to the local subscribers and answers `published`.
pub(super) fn publish(ctx: &mut Ctx<'_>, message: Publish, request_id: Option<RequestId>) -> Result<(), Ending> {
    if let Err(e) = topic::validate_name(&message.topic) {
        ctx.send_error(ErrorCode::InvalidMessage, format!("field `topic`: {e}"), request_id);
        return Ok(());
    }
    let user = ctx.session.identity.user_id.as_str();
    if let Err(why) = ctx.state.topics.may_publish(user, &message.topic) {
        ctx.send_error(ErrorCode::Forbidden, why, request_id);
        return Ok(());
    }
    let outgoing = TopicMessage {
        topic: message.topic,
        data: message.data,
        from: Some(user.to_owned()),
        timestamp: Timestamp::now(),
        skip_session: (!message.echo).then_some(ctx.conn.id),
    };
    match ctx.state.topics.deliver(&outgoing) {
        Ok(delivered) => {
            activity!(
                "PUBLISH",
                session = ctx.conn.id,
                "session {} published on {}: queued for {} sessions",
                ctx.conn.id,
                outgoing.topic,
                delivered.sessions
            );
            let reply = Published { topic: outgoing.topic, delivered: delivered.sessions, offset: delivered.offset };
            ctx.send(&ServerMessage::Published(reply), request_id);
        }
        Err(why) => ctx.send_error(ErrorCode::PayloadTooLarge, why, request_id),
    }
    Ok(())
}

/// `connect`: the older JavaScript client's greeting, answered `connected`.
pub(super) fn connect(ctx: &mut Ctx<'_>, _message: Connect, request_id: Option<RequestId>) -> Result<(), Ending> {
    let identity = &ctx.session.identity;
    let reply = Connected {
        session_id: ctx.conn.id.to_string(),
        user_id: identity.user_id.clone(),
        client_id: identity.client_id.clone(),
    };
    ctx.send(&ServerMessage::Connected(reply), request_id);
    Ok(())
}
