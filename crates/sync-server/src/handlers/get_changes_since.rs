//! `get_changes_since`: one page of the visible change log. A query: it does not change
//! what is pushed to the session.

use sync_core::protocol::{GetChangesSince, RequestId};
use sync_store::Store;

use super::Ctx;
use crate::connection::Ending;

/// Page size when the client names none.
const DEFAULT_LIMIT: usize = 500;

/// Answers with `changes`.
pub(super) async fn handle(
    ctx: &mut Ctx<'_>,
    message: GetChangesSince,
    request_id: Option<RequestId>,
) -> Result<(), Ending> {
    ctx.settle().await?;
    let max = ctx.state.config.limits.max_page.clamp(1, 5000);
    let limit = message.limit.map_or(DEFAULT_LIMIT, |l| l as usize).clamp(1, max);
    let scope = ctx.scope();
    match ctx.state.store.changes_since(scope, message.last_sequence, limit, message.collections).await {
        Ok(page) => {
            ctx.send_changes(page, request_id);
        }
        Err(e) => ctx.storage_failed(e, request_id),
    }
    Ok(())
}
