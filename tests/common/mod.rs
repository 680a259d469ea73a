//! Raw-frame test client for the embedded server: every frame it receives is checked byte by
//! byte (compact JSON, only PROTOCOL.md section-3 keys) before it is handed to the test.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use actix_amps::protocol::{decode_frame, encode_parts, AckTypes, Command, Frame, Header};
use actix_amps::server::{Server, ServerConfig, ServerHandle};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

pub const WAIT: Duration = Duration::from_secs(5);

pub const ALLOWED_KEYS: &[&str] = &[
    "c",
    "cid",
    "t",
    "a",
    "s",
    "bm",
    "bookmark",
    "status",
    "reason",
    "x",
    "e",
    "k",
    "sow_keys",
    "filter",
    "o",
    "client_name",
    "user_id",
    "pw",
    "version",
    "mt",
    "sub_id",
    "query_id",
    "sids",
    "matches",
    "records_deleted",
    "topic_matches",
    "records_returned",
    "ts",
    "l",
    "bs",
    "top_n",
    "orderby",
    "lp",
    "gseq",
];

pub fn start(
    config: impl FnOnce(ServerConfig) -> ServerConfig,
) -> (tempfile::TempDir, ServerHandle) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(config(ServerConfig::new(dir.path()))).expect("server starts");
    (dir, server)
}

pub fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Asserts the header bytes are compact JSON with only allowed keys.
pub fn check_header_bytes(header: &[u8]) {
    let mut in_str = false;
    let mut esc = false;
    for &b in header {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
        } else if b == b'"' {
            in_str = true;
        } else {
            assert!(
                !b.is_ascii_whitespace(),
                "whitespace in header {}",
                String::from_utf8_lossy(header)
            );
        }
    }
    let v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).expect("header is a JSON object");
    for (k, val) in &v {
        assert!(ALLOWED_KEYS.contains(&k.as_str()), "unexpected key {k}");
        assert!(val.is_string() || val.is_u64(), "value of {k} is {val}");
    }
}

pub struct Conn {
    pub stream: TcpStream,
    buf: BytesMut,
    /// The header of the last frame received, exactly as the server wrote it.
    pub last_header: String,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        let stream = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        stream.set_nodelay(true).ok();
        Conn {
            stream,
            buf: BytesMut::new(),
            last_header: String::new(),
        }
    }

    /// Wraps an already connected stream (e.g. one with a small receive buffer).
    pub fn from_stream(stream: TcpStream) -> Conn {
        stream.set_nodelay(true).ok();
        Conn {
            stream,
            buf: BytesMut::new(),
            last_header: String::new(),
        }
    }

    pub async fn send(&mut self, h: &Header, body: &[u8]) {
        let mut b = BytesMut::new();
        encode_parts(h, body, &mut b);
        self.send_raw(&b).await;
    }

    /// Sends a frame whose header is `header`, exactly as written (the official client's
    /// frames are copied into tests this way).
    pub async fn send_json(&mut self, header: &str, body: &[u8]) {
        let mut b = Vec::with_capacity(4 + header.len() + body.len());
        b.extend_from_slice(&((header.len() + body.len()) as u32).to_be_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(body);
        self.send_raw(&b).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        timeout(WAIT, self.stream.write_all(bytes))
            .await
            .expect("write in time")
            .expect("write");
    }

    /// The next frame within `d`; `Ok(None)` if the server closed the connection, `Err(())` on
    /// timeout.
    pub async fn recv_within(&mut self, d: Duration) -> Result<Option<Frame>, ()> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    let bytes = self.buf.split_to(len).freeze();
                    let (_, used) = Header::parse(&bytes).expect("server header parses");
                    check_header_bytes(&bytes[..used]);
                    self.last_header = String::from_utf8_lossy(&bytes[..used]).into_owned();
                    return Ok(Some(decode_frame(bytes).expect("frame decodes")));
                }
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
            }
        }
    }

    pub async fn recv(&mut self) -> Frame {
        self.recv_within(WAIT)
            .await
            .expect("a frame in time")
            .expect("connection open")
    }

    /// Asserts the server closes the connection within `d` (frames before that are returned).
    pub async fn expect_closed(&mut self, d: Duration) -> Vec<Frame> {
        let mut seen = Vec::new();
        loop {
            match self.recv_within(d).await {
                Ok(Some(f)) => seen.push(f),
                Ok(None) => return seen,
                Err(()) => panic!("connection not closed within {d:?}; saw {seen:?}"),
            }
        }
    }

    /// Asserts nothing arrives for `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Ok(f) = self.recv_within(d).await {
            panic!("expected silence, got {f:?}");
        }
    }

    pub async fn logon_with(&mut self, h: Header) -> Frame {
        self.send(&h, b"").await;
        self.recv().await
    }

    pub async fn logon(&mut self, name: &str) -> Frame {
        let ack = self.logon_with(logon(name)).await;
        assert_eq!(
            ack.header.status.as_ref().map(|s| s.as_str()),
            Some("success"),
            "{ack:?}"
        );
        ack
    }

    /// Receives frames until `pred` matches one, returning all received (the last matched).
    pub async fn recv_until(&mut self, mut pred: impl FnMut(&Frame) -> bool) -> Vec<Frame> {
        let mut v = Vec::new();
        loop {
            let f = self.recv().await;
            let done = pred(&f);
            v.push(f);
            if done {
                return v;
            }
        }
    }
}

pub fn logon(name: &str) -> Header {
    Header {
        command: Some(Command::Logon),
        cid: Some("auto0".into()),
        client_name: Some(name.into()),
        message_type: Some("json".into()),
        ack_type: AckTypes::PROCESSED,
        version: Some("test:rust".into()),
        ..Header::default()
    }
}

pub fn publish(topic: &str, seq: u64) -> Header {
    Header {
        command: Some(Command::Publish),
        topic: Some(topic.into()),
        ack_type: AckTypes::PERSISTED,
        seq: Some(seq),
        ..Header::default()
    }
}

pub fn flush(cid: &str, acks: AckTypes) -> Header {
    Header {
        command: Some(Command::Flush),
        cid: Some(cid.into()),
        ack_type: acks,
        ..Header::default()
    }
}

pub fn is_persisted(f: &Frame) -> bool {
    f.is_ack_of(actix_amps::protocol::AckType::Persisted) && f.header.cid.is_none()
}

pub fn is_cid(f: &Frame, cid: &str) -> bool {
    f.header.cid.as_deref() == Some(cid)
}
