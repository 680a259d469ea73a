//! A scripted hostile AMPS server for client tests.
//!
//! The peer listens on 127.0.0.1:0. On its **first** connection it answers the logon as the
//! script says (with or without `bm` and `s`), silently collects the client's publishes until
//! it has `wait_for` of them, then performs the script's one misbehaviour (raw bytes built from
//! the sequences it received) and then, as the script says, waits for the client to close,
//! closes itself, or turns into a correct server on the same connection. Every **later**
//! connection is a correct server: its logon ack reports the highest sequence the peer has
//! acknowledged as a correct server (or what the script says), and it acknowledges every
//! sequenced write cumulatively and answers flushes.
//!
//! The peer records, per connection, every sequence it received, so a test can check that the
//! store was replayed in full and that every message was acknowledged exactly once.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_amps::protocol::{decode_frame, encode_parts, AckTypes, Command, Frame, Header, Status};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bound on every wait inside the peer.
const PEER_WAIT: Duration = Duration::from_secs(20);

/// How the peer answers a logon.
#[derive(Clone, Debug)]
pub enum LogonReply {
    /// As a real server: `s` and `bm` both carry the highest sequence acknowledged so far.
    Correct,
    /// Success, with exactly these fields (`None` leaves the field out).
    Fields {
        /// The bookmark, verbatim.
        bm: Option<String>,
        /// The `s` field.
        s: Option<u64>,
    },
}

/// What the first connection does after its misbehaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Keep reading (and ignoring) until the client closes the connection.
    AwaitClose,
    /// Close the socket at once.
    Close,
    /// Behave correctly from now on, on the same connection.
    BeGood,
}

/// The first connection's script.
pub struct Script {
    /// The logon reply on the first connection.
    pub first_logon: LogonReply,
    /// The logon reply on every later connection.
    pub later_logon: LogonReply,
    /// Publishes to receive (unacknowledged) before misbehaving.
    pub wait_for: usize,
    /// The misbehaviour: bytes to write, built from the sequences received so far.
    pub act: fn(&[u64]) -> Vec<u8>,
    /// What follows.
    pub after: After,
}

#[derive(Default)]
struct Log {
    /// Sequences received, per connection, in arrival order.
    seqs: Vec<Vec<u64>>,
    /// Highest sequence acknowledged while behaving correctly.
    acked: u64,
}

/// A running hostile peer.
pub struct HostilePeer {
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HostilePeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostilePeer {
    /// Starts the peer on the current runtime.
    pub async fn start(script: Script) -> HostilePeer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(Log::default()));
        let task = tokio::spawn(accept(listener, script, log.clone()));
        HostilePeer { addr, log, task }
    }

    /// The client URI for this peer.
    pub fn uri(&self) -> String {
        format!("tcp://{}/amps/json", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.log.lock().unwrap().seqs.len()
    }

    /// Sequences received on connection `i` (0-based), in arrival order.
    pub fn sequences(&self, i: usize) -> Vec<u64> {
        self.log
            .lock()
            .unwrap()
            .seqs
            .get(i)
            .cloned()
            .unwrap_or_default()
    }
}

async fn accept(listener: TcpListener, script: Script, log: Arc<Mutex<Log>>) {
    let script = Arc::new(script);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let index = {
            let mut l = log.lock().unwrap();
            l.seqs.push(Vec::new());
            l.seqs.len() - 1
        };
        tokio::spawn(serve(stream, index, script.clone(), log.clone()));
    }
}

/// Reads frames from the client.
struct Reader {
    stream: TcpStream,
    buf: BytesMut,
}

impl Reader {
    /// The next frame; `None` when the client closed (or after [`PEER_WAIT`] of silence).
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    let bytes = self.buf.split_to(len).freeze();
                    return Some(decode_frame(bytes).expect("the client sends valid frames"));
                }
            }
            match tokio::time::timeout(PEER_WAIT, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> bool {
        matches!(
            tokio::time::timeout(PEER_WAIT, self.stream.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }
}

fn is_write(f: &Frame) -> bool {
    matches!(
        f.header.command,
        Some(Command::Publish | Command::DeltaPublish | Command::SowDelete)
    )
}

/// A compact persisted ack for `s`.
pub fn persisted_ack(s: u64) -> Vec<u8> {
    let h = Header {
        command: Some(Command::Ack),
        ack_type: AckTypes::PERSISTED,
        status: Some(Status::Success),
        seq: Some(s),
        ..Header::default()
    };
    let mut out = BytesMut::new();
    encode_parts(&h, b"", &mut out);
    out.to_vec()
}

/// A frame whose header is exactly `header` (no checks: it may be anything).
pub fn raw_frame(header: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(header);
    v
}

async fn serve(stream: TcpStream, index: usize, script: Arc<Script>, log: Arc<Mutex<Log>>) {
    let _ = stream.set_nodelay(true);
    let mut r = Reader {
        stream,
        buf: BytesMut::new(),
    };
    let Some(logon) = r.next().await else { return };
    assert_eq!(logon.header.command, Some(Command::Logon));
    let reply = if index == 0 {
        &script.first_logon
    } else {
        &script.later_logon
    };
    let (bm, s) = match reply {
        LogonReply::Correct => {
            let acked = log.lock().unwrap().acked;
            (Some(format!("12345|{acked}|")), Some(acked))
        }
        LogonReply::Fields { bm, s } => (bm.clone(), *s),
    };
    let ack = Header {
        command: Some(Command::Ack),
        cid: logon.header.cid.clone(),
        ack_type: AckTypes::PROCESSED,
        status: Some(Status::Success),
        client_name: logon.header.client_name.clone(),
        version: Some("5.3.5.0".into()),
        seq: s,
        bookmark: bm,
        ..Header::default()
    };
    let mut out = BytesMut::new();
    encode_parts(&ack, b"", &mut out);
    if !r.write(&out).await {
        return;
    }
    if index == 0 {
        let mut received = Vec::new();
        while received.len() < script.wait_for {
            let Some(f) = r.next().await else { return };
            if let (true, Some(s)) = (is_write(&f), f.header.seq) {
                received.push(s);
                log.lock().unwrap().seqs[index].push(s);
            }
        }
        let bytes = (script.act)(&received);
        if !r.write(&bytes).await {
            return;
        }
        match script.after {
            After::Close => return,
            After::AwaitClose => {
                while let Some(f) = r.next().await {
                    if let (true, Some(s)) = (is_write(&f), f.header.seq) {
                        log.lock().unwrap().seqs[index].push(s);
                    }
                }
                return;
            }
            After::BeGood => {
                // A correct server acknowledges what it already has.
                if let Some(&max) = received.iter().max() {
                    log.lock().unwrap().acked = max;
                    if !r.write(&persisted_ack(max)).await {
                        return;
                    }
                }
            }
        }
    }
    be_good(r, index, log).await;
}

/// A correct server: cumulative persisted acks for every sequenced write, flush acks after.
async fn be_good(mut r: Reader, index: usize, log: Arc<Mutex<Log>>) {
    while let Some(f) = r.next().await {
        let mut out = BytesMut::new();
        if is_write(&f) {
            if let Some(s) = f.header.seq {
                let acked = {
                    let mut l = log.lock().unwrap();
                    l.seqs[index].push(s);
                    l.acked = l.acked.max(s);
                    l.acked
                };
                out.extend_from_slice(&persisted_ack(acked));
            }
        } else if f.header.command == Some(Command::Flush) {
            let h = Header {
                command: Some(Command::Ack),
                cid: f.header.cid.clone(),
                ack_type: f.header.ack_type,
                status: Some(Status::Success),
                ..Header::default()
            };
            encode_parts(&h, b"", &mut out);
        }
        if !out.is_empty() && !r.write(&out).await {
            return;
        }
    }
}
