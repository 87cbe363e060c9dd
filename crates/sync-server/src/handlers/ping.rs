//! `ping`: answered with `pong` (not rate limited).

use sync_core::protocol::{RequestId, ServerMessage};

use crate::session::{Ending, Session};

/// Answers with `pong`.
pub(super) fn handle(session: &mut Session, request_id: Option<RequestId>) -> Result<(), Ending> {
    session.send(ServerMessage::Pong, request_id);
    Ok(())
}
