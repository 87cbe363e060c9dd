//! `ack_changes`: records how far this replica has stored the log.

use sync_core::protocol::{AckChanges, ChangesAcknowledged, RequestId, ServerMessage};
use sync_store::Store;

use super::Ctx;
use crate::connection::Ending;

/// Stores the cursor (never beyond what was delivered) and confirms it.
pub(super) async fn handle(
    ctx: &mut Ctx<'_>,
    message: AckChanges,
    request_id: Option<RequestId>,
) -> Result<(), Ending> {
    let sequence = message.up_to_sequence.min(ctx.state.hub.delivered());
    let (user_id, client_id) = (ctx.session.identity.user_id.clone(), ctx.session.identity.client_id.clone());
    match ctx.state.store.ack_cursor(user_id, client_id, sequence).await {
        Ok(()) => ctx.send(&ServerMessage::ChangesAcknowledged(ChangesAcknowledged { sequence }), request_id),
        Err(e) => ctx.storage_failed(e, request_id),
    }
    Ok(())
}
