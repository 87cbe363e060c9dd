//! `create_document`: handed to the write path; answered with `document_created_response`.

use sync_core::protocol::{CreateDocument, RequestId};

use crate::session::{Ending, Session};
use crate::writer::WriteOp;

/// Submits the create.
pub(super) async fn handle(
    session: &mut Session,
    message: CreateDocument,
    request_id: Option<RequestId>,
) -> Result<(), Ending> {
    session.submit(WriteOp::Create(message), request_id).await
}
