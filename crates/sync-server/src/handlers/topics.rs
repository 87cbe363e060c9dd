//! `subscribe`, `unsubscribe`, `publish`: topics arrive in a later release; until then
//! these messages get a clear error and the connection stays open.

use sync_core::ErrorCode;
use sync_core::protocol::RequestId;

use super::Ctx;
use crate::connection::Ending;

/// Answers that topics are not available yet.
pub(super) fn not_available(
    ctx: &mut Ctx<'_>,
    message_type: &str,
    request_id: Option<RequestId>,
) -> Result<(), Ending> {
    ctx.send_error(
        ErrorCode::InvalidMessage,
        format!("`{message_type}` is not available yet: topics (pub/sub) arrive in a later release of this server"),
        request_id,
    );
    Ok(())
}
