//! Opening a connection: the WebSocket (with the frame limits a page of changes
//! needs), then `authenticate` with this replica's credentials, client id and the
//! collections of partial sync. Returns a socket only once the server said
//! `auth_success`, with the user id the server knows this user as.

use std::time::Duration;

use sync_core::ErrorCode;
use sync_core::protocol::{Authenticate, ClientEnvelope, ClientMessage, Credentials, ServerMessage};
use yawc::{Options, WebSocket};

use super::wire::{Socket, next_messages, send};
use crate::config::Auth;
use crate::error::{Result, SyncError};
use crate::shared::Shared;

/// What `auth_success` said.
pub(super) struct Welcome {
    /// The user id the server knows this user as.
    pub(super) user_id: String,
    /// The cursor is older than the server's history of access rules: after the
    /// catch-up, this replica compares its documents of others with a full sync.
    pub(super) access_reconcile: bool,
}

/// Connects and authenticates; returns the socket and what `auth_success` said.
pub(super) async fn connect(shared: &Shared) -> Result<(Socket, Welcome)> {
    let config = shared.config();
    let url = config.server_url.parse().map_err(|e| SyncError::WebSocket {
        context: "invalid server URL".into(),
        source: yawc::WebSocketError::from(e),
    })?;
    // Server messages can be large (a 1 MiB document, a page of changes up to the server's
    // page budget, 4 MiB by default): accept up to 64 MiB rather than yawc's 1 MiB.
    let options = Options::default().with_low_latency_compression().with_no_delay().with_limits(64 << 20, 64 << 20);
    let mut builder = WebSocket::connect(url).with_options(options);
    if let Some(ca_file) = &config.tls_ca_file {
        builder = builder.with_connector(super::tls::connector(ca_file)?);
    }
    let mut socket = tokio::time::timeout(Duration::from_secs(10), builder)
        .await
        .map_err(|_| SyncError::Connection("connecting timed out".into()))?
        .map_err(|source| SyncError::WebSocket {
            context: format!("cannot connect to {}", config.server_url),
            source,
        })?;
    let credentials = match &config.auth {
        Auth::ApiKey { key, secret } => {
            let timestamp = sync_core::Timestamp::now().unix_millis() / 1000;
            let signature = sync_core::auth::sign(secret, timestamp, &config.user, key, b"");
            Credentials::Hmac { email: config.user.clone(), api_key: key.clone(), signature, timestamp }
        }
        Auth::Token(token) => Credentials::Bearer { user_id: config.user.clone(), auth_token: token.clone() },
        Auth::Jwt(token) => Credentials::Jwt { token: token.clone() },
    };
    let message = ClientMessage::Authenticate(Authenticate {
        credentials,
        client_id: Some(shared.client_id().to_owned()),
        // Resume: the server sends what changed since the cursor, the access rules
        // included (PROTOCOL.md §6, §8), before live pushes.
        last_sequence: Some(shared.cursor()),
        collections: config.collections.clone(),
    });
    send(&mut socket, &[ClientEnvelope::new(message)]).await?;
    let reply = tokio::time::timeout(Duration::from_secs(10), next_messages(&mut socket))
        .await
        .map_err(|_| SyncError::Connection("no answer to authenticate".into()))??;
    match reply.into_iter().next().map(|e| e.message) {
        Some(ServerMessage::AuthSuccess(success)) => {
            Ok((socket, Welcome { user_id: success.user_id, access_reconcile: success.access_reconcile }))
        }
        Some(ServerMessage::AuthError(e)) => Err(SyncError::Server {
            code: ErrorCode::InvalidAuth,
            message: format!("authentication failed: {}", e.reason),
        }),
        other => Err(SyncError::Connection(format!("unexpected answer to authenticate: {other:?}"))),
    }
}
