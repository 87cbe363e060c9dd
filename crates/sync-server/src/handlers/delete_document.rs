//! `delete_document`: handed to the write path; answered with `document_deleted_response`.

use sync_core::protocol::{DeleteDocument, RequestId};

use crate::session::{Ending, Session};
use crate::writer::WriteOp;

/// Submits the delete.
pub(super) async fn handle(
    session: &mut Session,
    message: DeleteDocument,
    request_id: Option<RequestId>,
) -> Result<(), Ending> {
    session.submit(WriteOp::Delete(message), request_id).await
}
