//! What goes to the server: the next change of each document with pending changes (at
//! most one in flight per document, sent again under its id after a reconnect),
//! requests for a document's whole state after a gap, cursor acknowledgements; all
//! queued, then sent together by one flush.

use std::sync::Arc;

use sync_core::protocol::{
    ClientEnvelope, ClientMessage, CreateDocument, DeleteDocument, DocumentPatch, GetDocument, NewDocument, RequestId,
    UpdateDocument,
};
use sync_core::replica::{Outgoing, PendingChange};

use super::Session;
use super::wire::send;
use crate::error::Result;
use crate::local;

impl Session {
    /// Sends every queued message, then flushes the socket once.
    pub(super) async fn flush(&mut self) -> Result<()> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        let messages = std::mem::take(&mut self.outbox);
        send(&mut self.socket, &messages).await
    }

    /// A new request id on this connection: `prefix` and a number.
    pub(super) fn request_id(&mut self, prefix: &str) -> String {
        self.requests += 1;
        format!("{prefix}-{}", self.requests)
    }

    /// Asks the server for a document's whole state (once while an answer is awaited).
    pub(super) fn refetch(&mut self, id: &str) {
        if self.resyncing.insert(id.to_owned()) {
            let request_id = self.request_id("resync");
            let message = ClientMessage::GetDocument(GetDocument { document_id: id.to_owned(), at_revision: None });
            self.outbox.push(ClientEnvelope::with_id(message, RequestId::Str(request_id)));
        }
    }

    /// Queues the next change of every document with pending changes. After a reconnect
    /// (`resend`), in-flight changes are sent again under their ids.
    pub(super) fn queue_outbox(&mut self, resend: bool) -> Result<()> {
        let ids = self.shared.pending_ids()?;
        for id in ids {
            self.queue_document(&id, resend)?;
        }
        Ok(())
    }

    /// Queues the next change of one document, if it has one and none is in flight.
    pub(super) fn queue_document(&mut self, id: &str, resend: bool) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let outgoing = shared.transaction(|tx| {
            let Some(mut row) = local::load(tx, id, &|c| shared.policy(c))? else { return Ok(None) };
            let outgoing = match (resend, row.replica.in_flight().is_some()) {
                (true, true) => row.replica.resend(),
                (_, false) => row.replica.next_to_send(),
                (false, true) => None,
            };
            if outgoing.is_some() {
                local::save(tx, &row)?;
            }
            Ok(outgoing.map(|o| (o, row.collection.clone())))
        })?;
        if let Some((outgoing, collection)) = outgoing {
            self.outbox.push(envelope(id, &collection, outgoing));
        }
        Ok(())
    }

    /// Counts an applied change; every 100, the cursor is acknowledged.
    pub(super) fn count_for_ack(&mut self) {
        self.since_ack += 1;
        if self.since_ack >= 100 {
            self.ack_cursor();
        }
    }

    /// Tells the server how far this replica has stored the log.
    pub(super) fn ack_cursor(&mut self) {
        self.since_ack = 0;
        let up_to_sequence = self.shared.cursor();
        if up_to_sequence > 0 {
            let message = ClientMessage::AckChanges(sync_core::protocol::AckChanges { up_to_sequence });
            self.outbox.push(ClientEnvelope::new(message));
        }
    }
}

/// The protocol message of an outgoing change; its `request_id` is its change id.
fn envelope(id: &str, collection: &str, outgoing: Outgoing) -> ClientEnvelope {
    let change_id = outgoing.change_id.clone();
    let message = match outgoing.change {
        PendingChange::Create { content } => ClientMessage::CreateDocument(CreateDocument {
            document: NewDocument {
                id: Some(id.to_owned()),
                collection: Some(collection.to_owned()),
                title: None,
                content,
            },
            client_change_id: Some(change_id.clone()),
        }),
        PendingChange::Update { patch, base_revision } => ClientMessage::UpdateDocument(UpdateDocument {
            patch: DocumentPatch {
                document_id: id.to_owned(),
                patch,
                base_revision,
                content_hash: None,
                client_change_id: Some(change_id.clone()),
            },
        }),
        PendingChange::Delete { base_revision } => ClientMessage::DeleteDocument(DeleteDocument {
            document_id: id.to_owned(),
            base_revision,
            client_change_id: Some(change_id.clone()),
        }),
    };
    ClientEnvelope::with_id(message, RequestId::Str(change_id))
}
