//! A pipelined raw-socket publisher: the baseline every client benchmark is measured against.
//!
//! [`RawWriter::run`] connects, logs on, then writes `count` publish frames
//! (`{"c":"p","t":T,"a":"persisted","s":seq}` + body) in 64 KiB batches while the read half
//! counts persisted acks, and ends with a `flush` (`a=persisted`) whose ack proves everything
//! before it is durable. No actors, no store: the fastest a client could possibly go.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use crate::protocol::{encode_parts, AckType, AckTypes, AmpsCodec, Command, Header, Status};

/// The result of one [`RawWriter::run`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct RawRun {
    /// From the first publish written to the flush ack received.
    pub elapsed: Duration,
    /// Messages published (and acknowledged persisted).
    pub messages: u64,
    /// Body bytes published.
    pub body_bytes: u64,
    /// Conflated persisted acks received.
    pub acks: u64,
}

impl RawRun {
    /// Messages per second.
    pub fn msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Body megabytes (10^6) per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.body_bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The raw pipelined publisher (see the module docs).
#[derive(Debug)]
pub struct RawWriter;

/// Bytes per socket write.
const BATCH: usize = 64 * 1024;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl RawWriter {
    /// Publishes `count` copies of `body` to `topic` as `client_name` and waits for all of
    /// them to be persisted. Sequences continue after the server's last one for the name.
    pub async fn run(
        addr: SocketAddr,
        client_name: &str,
        topic: &str,
        body: Bytes,
        count: u64,
    ) -> io::Result<RawRun> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (rd, mut wr) = stream.into_split();
        let mut frames = FramedRead::with_capacity(rd, AmpsCodec::default(), 256 * 1024);
        let mut buf = BytesMut::with_capacity(BATCH + 1024);
        let logon = Header {
            command: Some(Command::Logon),
            cid: Some("logon".into()),
            client_name: Some(client_name.into()),
            message_type: Some("json".into()),
            ack_type: AckTypes::PROCESSED,
            version: Some(format!("{}:rust-raw", env!("CARGO_PKG_VERSION"))),
            ..Header::default()
        };
        encode_parts(&logon, b"", &mut buf);
        wr.write_all(&buf).await?;
        buf.clear();
        let ack = frames
            .next()
            .await
            .ok_or_else(|| invalid("closed before the logon ack".into()))?
            .map_err(|e| invalid(e.to_string()))?;
        if ack.header.status != Some(Status::Success) {
            return Err(invalid(format!("logon refused: {}", ack.header.to_json())));
        }
        let start_seq = ack.header.seq.unwrap_or(0);
        let last_seq = start_seq + count;

        let reader = tokio::spawn(async move {
            let mut acks = 0u64;
            while let Some(f) = frames.next().await {
                let f = f.map_err(|e| invalid(e.to_string()))?;
                if f.header.command != Some(Command::Ack) {
                    continue;
                }
                if f.header.status == Some(Status::Failure) {
                    return Err(invalid(format!("write failed: {}", f.header.to_json())));
                }
                if f.header.cid.as_deref() == Some("flush") {
                    return Ok(acks);
                }
                if f.is_ack_of(AckType::Persisted) {
                    acks += 1;
                }
            }
            Err(invalid("closed before the flush ack".into()))
        });

        let started = Instant::now();
        let mut h = Header {
            command: Some(Command::Publish),
            topic: Some(topic.into()),
            ack_type: AckTypes::PERSISTED,
            ..Header::default()
        };
        for seq in start_seq + 1..=last_seq {
            h.seq = Some(seq);
            encode_parts(&h, &body, &mut buf);
            if buf.len() >= BATCH {
                wr.write_all(&buf).await?;
                buf.clear();
            }
        }
        let flush = Header {
            command: Some(Command::Flush),
            cid: Some("flush".into()),
            ack_type: AckTypes::PERSISTED,
            ..Header::default()
        };
        encode_parts(&flush, b"", &mut buf);
        wr.write_all(&buf).await?;
        let acks = reader
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
        Ok(RawRun {
            elapsed: started.elapsed(),
            messages: count,
            body_bytes: count * body.len() as u64,
            acks,
        })
    }
}
