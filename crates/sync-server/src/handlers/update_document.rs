//! `update_document`: handed to the write path, which rebases it if its base revision is
//! stale; answered with `document_updated_response`.

use sync_core::protocol::{RequestId, UpdateDocument};

use crate::session::{Ending, Session};
use crate::writer::WriteOp;

/// Submits the update.
pub(super) async fn handle(
    session: &mut Session,
    message: UpdateDocument,
    request_id: Option<RequestId>,
) -> Result<(), Ending> {
    session.submit(WriteOp::Update(message.patch), request_id).await
}
