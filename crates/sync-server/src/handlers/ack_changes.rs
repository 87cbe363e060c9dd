//! `ack_changes`: records how far this replica has stored the log.

use sync_core::protocol::{AckChanges, ChangesAcknowledged, RequestId, ServerMessage};
use sync_store::Store;

use crate::session::{Ending, Session};

/// Stores the cursor (never beyond what was delivered) and confirms it.
pub(super) async fn handle(
    session: &mut Session,
    message: AckChanges,
    request_id: Option<RequestId>,
) -> Result<(), Ending> {
    let sequence = message.up_to_sequence.min(session.state.hub.delivered());
    let (user_id, client_id) = (session.user().user_id.clone(), session.user().client_id.clone());
    match session.state.store.ack_cursor(user_id, client_id, sequence).await {
        Ok(()) => session.send(ServerMessage::ChangesAcknowledged(ChangesAcknowledged { sequence }), request_id),
        Err(e) => super::storage_failed(session, e, request_id),
    }
    Ok(())
}
