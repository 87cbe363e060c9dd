//! `authenticate` (or credentials on the upgrade request): checks the credentials,
//! registers the session with the hub, answers `auth_success`, and sends a resuming
//! client every readable change after its `last_sequence` before live pushes resume.
//!
//! Guarantees: a failure is answered with `auth_error` and ends the session (4001); a
//! resumed session receives every readable change after `last_sequence` exactly once,
//! in order — first as `changes` pages, then live pushes, with pushes that arrive during
//! the catch-up held back and those the catch-up already sent dropped; without
//! `last_sequence`, live pushes start after the `latest_sequence` of `auth_success`; a
//! resumed session whose rules changed since `last_sequence` is first sent what they
//! changed (`document_shared`, `access_revoked`), as a live change of rules would be.

use std::sync::Arc;

use sync_core::acl::ReadView;
use sync_core::protocol::{
    AuthError, AuthSuccess, Authenticate, Credentials, PROTOCOL_VERSION, RequestId, ServerMessage,
};
use sync_store::{AclSince, Store};

use super::Ctx;
use crate::auth::AuthFailure;
use crate::authenticated::{Authenticated, Identity, PreAuth};
use crate::connection::{Connection, Ending};
use crate::monitor::activity;
use crate::state::AppState;

/// Authenticates with an `authenticate` message.
pub(crate) async fn handle(
    state: &AppState,
    conn: &mut Connection,
    message: Authenticate,
    request_id: Option<RequestId>,
) -> Result<Authenticated, Ending> {
    // How the monitoring log names the method, and its metrics label.
    let (method, label) = match &message.credentials {
        Credentials::Hmac { .. } => ("api key", "hmac"),
        Credentials::Bearer { .. } => ("bearer token", "token"),
        Credentials::Jwt { .. } => ("jwt", "jwt"),
    };
    match state.auth.authenticate(&message.credentials).await {
        Ok(principal) => {
            let mut identity = Identity::new(principal, message.client_id);
            identity.collections = message.collections.map(Arc::from);
            start(state, conn, identity, message.last_sequence, method, request_id).await
        }
        Err(failure) => {
            metrics::counter!(crate::metrics::AUTH_FAILURES, "method" => label).increment(1);
            conn.send(&ServerMessage::AuthError(AuthError { reason: failure.to_string() }), request_id);
            Err(refuse(conn, failure))
        }
    }
}

/// Authenticates with the credentials of the upgrade request.
pub(crate) async fn upgrade(
    state: &AppState,
    conn: &mut Connection,
    pre_auth: Result<PreAuth, AuthFailure>,
) -> Result<Authenticated, Ending> {
    let pre = pre_auth.map_err(|failure| {
        metrics::counter!(crate::metrics::AUTH_FAILURES, "method" => "upgrade").increment(1);
        refuse(conn, failure)
    })?;
    let identity = Identity::new(pre.principal, pre.client_id);
    let session = start(state, conn, identity, pre.last_sequence, "upgrade bearer", None).await?;
    // The client sends nothing first here: `auth_success` must go out now, not after
    // the client's first frame.
    conn.flush().await?;
    Ok(session)
}

/// Queues `auth_error` (unless a reply is queued already) and says how the session ends.
pub(crate) fn refuse(conn: &mut Connection, failure: AuthFailure) -> Ending {
    activity!("AUTH FAIL", session = conn.id, "session {}: {failure}", conn.id);
    if conn.nothing_queued() {
        conn.send(&ServerMessage::AuthError(AuthError { reason: failure.to_string() }), None);
    }
    Ending::Unauthenticated("authentication failed")
}

/// Registers with the hub, answers `auth_success`, and catches up from `last_sequence`.
async fn start(
    state: &AppState,
    conn: &mut Connection,
    identity: Identity,
    last_sequence: Option<u64>,
    method: &str,
    request_id: Option<RequestId>,
) -> Result<Authenticated, Ending> {
    let (mut session, delivered) = Authenticated::register(state, conn.id, identity);
    // Read after registering: a change of rules after this read reaches the session as
    // a marker in its queue, acted on after the catch-up.
    let resumed = match last_sequence {
        Some(after) => rules_at(state, &session, after).await?,
        None => Resumed::default(),
    };
    let identity = &session.identity;
    tracing::Span::current().record("user", identity.user_id.as_str());
    activity!(
        "AUTH",
        session = conn.id,
        "session {} user {} client {} via {method}",
        conn.id,
        identity.user_id,
        identity.client_id
    );
    conn.send(
        &ServerMessage::AuthSuccess(AuthSuccess {
            session_id: conn.id.to_string(),
            client_id: identity.client_id.clone(),
            user_id: identity.user_id.clone(),
            protocol_version: PROTOCOL_VERSION,
            latest_sequence: delivered,
            access_reconcile: resumed.beyond_history,
        }),
        request_id,
    );
    match last_sequence {
        Some(after) => catch_up(&mut Ctx { state, session: &mut session, conn }, after, resumed.old_views).await?,
        None => conn.pushed_through(delivered),
    }
    Ok(session)
}

/// What the rules were at a resuming session's cursor, when they changed since.
#[derive(Default)]
struct Resumed {
    /// What the session may have read at its cursor (by which of these lists it went is
    /// not known: see `sync_store::AclSince`); empty when the rules did not change since.
    old_views: Vec<Arc<ReadView>>,
    /// The cursor is older than the history of rules kept: `old_views` are the oldest
    /// lists', and the client is told to reconcile (`auth_success.access_reconcile`).
    beyond_history: bool,
}

/// Reads what the session may have read at `after` from the history of rules
/// (PROTOCOL.md §8). A cursor of 0 holds no document of others: nothing to compare.
async fn rules_at(state: &AppState, session: &Authenticated, after: u64) -> Result<Resumed, Ending> {
    if after == 0 {
        return Ok(Resumed::default());
    }
    let since = state
        .store
        .acl_since(after)
        .await
        .map_err(|e| Ending::Internal(format!("reading the access rules' history failed: {e}")))?;
    let user = session.identity.user_id.as_str();
    let (lists, beyond_history) = match since {
        AclSince::Unchanged => return Ok(Resumed::default()),
        AclSince::Changed(lists) => (lists, false),
        AclSince::BeyondHistory(lists) => (lists, true),
    };
    // Compiled for this user, most lists read alike: keep each view once.
    let mut old_views: Vec<Arc<ReadView>> = Vec::new();
    for acl in lists {
        let view = acl.read_view(user);
        if !old_views.iter().any(|seen| **seen == view) {
            old_views.push(Arc::new(view));
        }
    }
    Ok(Resumed { old_views, beyond_history })
}

/// Pushes every readable change after `after` as `changes` pages, then lets the held
/// live pushes through (those not already sent). When the rules changed since `after`,
/// what they changed for this session (from `old_views` to its view now) goes first: the
/// states of the documents it may now read (so the pages' changes of them are already
/// included, and dropped by revision), and the documents it may no longer read.
async fn catch_up(ctx: &mut Ctx<'_>, mut after: u64, old_views: Vec<Arc<ReadView>>) -> Result<(), Ending> {
    ctx.conn.hold();
    if !old_views.is_empty() {
        let now = Arc::clone(&ctx.session.view);
        super::access::send_difference(ctx, &old_views, &now).await?;
    }
    let page_size = ctx.state.config.limits.max_page.clamp(1, 5000);
    loop {
        let page = ctx
            .state
            .store
            .changes_since(
                ctx.scope(),
                after,
                page_size,
                ctx.session.identity.collections.as_deref().map(<[String]>::to_vec),
            )
            .await
            .map_err(|e| Ending::Internal(format!("catch-up read failed: {e}")))?;
        let (reached, has_more) = ctx.send_changes(page, None);
        after = after.max(reached);
        ctx.flush_page().await?;
        if !has_more {
            break;
        }
    }
    if ctx.session.has_access_change() {
        // The rules changed during the catch-up: send what they changed before the held
        // pushes (those the pages sent are dropped there too).
        return super::act_on_change(ctx, after).await;
    }
    ctx.conn.release(after);
    Ok(())
}
