//! Frames on the socket: sending a batch of messages with one flush, and reading the
//! next text frame as server messages. A close frame or the end of the stream is an
//! error, so callers see a lost connection as `Err`.

use futures_util::{SinkExt, StreamExt};
use sync_core::protocol::{ClientEnvelope, ServerEnvelope, decode_server_frame};
use tokio::net::TcpStream;
use yawc::{Frame, MaybeTlsStream, OpCode, WebSocket};

use crate::error::{Result, SyncError};

/// The WebSocket to the server.
pub(super) type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

pub(super) async fn send(socket: &mut Socket, messages: &[ClientEnvelope]) -> Result<()> {
    for message in messages {
        socket
            .feed(Frame::text(message.to_json()))
            .await
            .map_err(|source| SyncError::WebSocket { context: "sending failed".into(), source })?;
    }
    socket.flush().await.map_err(|source| SyncError::WebSocket { context: "sending failed".into(), source })
}

/// The messages of the next text frame.
pub(super) async fn next_messages(socket: &mut Socket) -> Result<Vec<ServerEnvelope>> {
    let frame = next_text_frame(socket).await?;
    decode_text(frame_text(&frame)?)
}

/// The next text frame (other data frames are skipped; a close frame is an error).
pub(super) async fn next_text_frame(socket: &mut Socket) -> Result<Frame> {
    loop {
        let frame =
            socket.next().await.ok_or_else(|| SyncError::Connection("the server closed the connection".into()))?;
        match frame.opcode() {
            OpCode::Text => return Ok(frame),
            OpCode::Close => {
                let reason = frame.close_reason().ok().flatten().unwrap_or_default().to_owned();
                let code = frame.close_code().map(u16::from).unwrap_or(1005);
                return Err(SyncError::Connection(format!("the server closed the connection ({code} {reason})")));
            }
            _ => continue,
        }
    }
}

/// A text frame's payload as text. Checked once here so that JSON parsing can skip
/// checking every string again.
pub(super) fn frame_text(frame: &Frame) -> Result<&str> {
    std::str::from_utf8(frame.payload()).map_err(SyncError::ServerText)
}

/// The messages of a text frame.
pub(super) fn decode_text(text: &str) -> Result<Vec<ServerEnvelope>> {
    decode_server_frame(text).map_err(SyncError::ServerMessage)
}
