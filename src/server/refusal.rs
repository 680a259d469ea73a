//! Answering a connection refused at accept (every slot is logged on): read its logon, bounded
//! in size and time, and answer it with a `too many connections` failure ack carrying the
//! logon's `cid`, so the client reports a refused logon with that reason instead of a bare
//! close. A first frame that is not a logon gets a closing notice with the same reason.
//!
//! At most [`MAX_REFUSALS`](super::admission::MAX_REFUSALS) refusals run at once (the accept
//! loop closes further refused connections without an answer), each for at most
//! [`REFUSAL_TIMEOUT`].

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Decoder;

use super::closing::notice;
use crate::protocol::{
    encode_parts, AckType, AckTypes, AmpsCodec, Command, Header, Reason, Status,
};

/// The most time one refusal takes, TLS handshake included.
pub(crate) const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads the first frame (at most `max_frame` bytes) and answers it with `too many
/// connections`, then closes gracefully. The caller bounds the time.
pub(crate) async fn answer<S>(mut stream: S, max_frame: usize) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut codec = AmpsCodec::new(max_frame);
    let mut input = BytesMut::with_capacity(4 * 1024);
    let mut out = BytesMut::new();
    let first = loop {
        match codec.decode(&mut input) {
            Ok(Some(frame)) => break Some(frame),
            Ok(None) => {}
            Err(_) => break None,
        }
        if stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
    };
    match first {
        Some(f) if f.header.command == Some(Command::Logon) => {
            let ack = Header {
                command: Some(Command::Ack),
                cid: f.header.cid.clone(),
                ack_type: AckTypes::only(AckType::Processed),
                status: Some(Status::Failure),
                reason: Some(Reason::TooManyConnections),
                ..Header::default()
            };
            encode_parts(&ack, b"", &mut out);
        }
        _ => notice(&mut out, Reason::TooManyConnections),
    }
    stream.write_all(&out).await?;
    stream.flush().await?;
    stream.shutdown().await?;
    // Read to the end so the close is not a reset that could destroy the answer unread.
    let mut sink = [0u8; 4096];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}
