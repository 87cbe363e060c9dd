//! `get_changes_since`: one page of the visible change log. A query: it does not change
//! what is pushed to the session.

use sync_core::protocol::{GetChangesSince, RequestId};
use sync_store::Store;

use crate::session::{Ending, Session};

/// Page size when the client names none.
const DEFAULT_LIMIT: usize = 500;

/// Answers with `changes`.
pub(super) async fn handle(
    session: &mut Session,
    message: GetChangesSince,
    request_id: Option<RequestId>,
) -> Result<(), Ending> {
    session.read_barrier().await?;
    let max = session.state.config.limits.max_page.clamp(1, 5000);
    let limit = message.limit.map_or(DEFAULT_LIMIT, |l| l as usize).clamp(1, max);
    let scope = session.scope();
    match session.state.store.changes_since(scope, message.last_sequence, limit, message.collections).await {
        Ok(page) => {
            session.send_changes(page, request_id);
        }
        Err(e) => super::storage_failed(session, e, request_id),
    }
    Ok(())
}
