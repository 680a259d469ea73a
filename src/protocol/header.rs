//! The frame header: typed fields, a compact JSON writer and a tolerant reader.
//!
//! An AMPS header is one flat JSON object whose values are strings or bare numbers
//! (PROTOCOL.md section 2). This module holds it as a plain struct of optional fields, one per key
//! of PROTOCOL.md section 3, so code elsewhere never touches JSON.
//!
//! **Writing** ([`Header::write_to`]) emits compact JSON: no whitespace anywhere, `"` and `\`
//! escaped (control characters as `\u00XX`), only the keys of section 3, and the numeric keys
//! (`s`, `bs`, `top_n`, `lp` and the stats counters) as bare numbers, everything else as strings,
//! exactly as the official clients do.
//!
//! **Reading** ([`Header::parse`]) is tolerant: every value may be a string or a number, long key
//! aliases (`cmd`, `cmd_id`, `topic`, `seq`, ...) are accepted, unknown keys (even with nested
//! values) are skipped, whitespace between tokens is allowed, and sequence numbers are parsed as
//! `u64` without passing through `f64`. Valid but unusual JSON is accepted (whitespace anywhere
//! between tokens, `\/`, `\u0065` for `e`, surrogate pairs); an invalid escape (`\x`, a short
//! `\u`, an unpaired surrogate) is a [`ProtocolError::MalformedHeader`] wherever it appears,
//! including inside an unknown key's skipped value, so a peer cannot smuggle one past the reader.
//! The reader is a hand-written scanner over the frame's bytes: a persisted ack (`c`, `a`, `s`,
//! `status`, and a known `reason`) is parsed without allocating at all; string fields allocate
//! only when present.

use bytes::{BufMut, BytesMut};

use super::ack::{AckTypes, Reason, Status};
use super::uri::Password;
use crate::error::ProtocolError;

/// The `c` header: what a frame is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// Log on (first command of a connection).
    Logon,
    /// Publish; written `p`, read as `p` or `publish`.
    Publish,
    /// Merge the body's fields into the stored record.
    DeltaPublish,
    /// Delete SOW records by filter, keys or data.
    SowDelete,
    /// Ask the server to acknowledge once everything before it is processed or persisted.
    Flush,
    /// Heartbeat (`o` = `start,<secs>` or `beat`).
    Heartbeat,
    /// Subscribe.
    Subscribe,
    /// Subscribe to deltas: updates carry the key fields and the changed fields only.
    DeltaSubscribe,
    /// SOW query (also a SOW result frame from the server).
    Sow,
    /// SOW query then subscribe.
    SowAndSubscribe,
    /// SOW query then delta subscribe.
    SowAndDeltaSubscribe,
    /// Unsubscribe.
    Unsubscribe,
    /// An acknowledgement from the server.
    Ack,
    /// Out-of-focus notice.
    Oof,
    /// Start of a SOW result group.
    GroupBegin,
    /// End of a SOW result group.
    GroupEnd,
    /// Any other command, verbatim.
    Other(String),
}

impl Command {
    /// The wire form (publish is `p`, everything else in full).
    pub fn as_str(&self) -> &str {
        match self {
            Command::Logon => "logon",
            Command::Publish => "p",
            Command::DeltaPublish => "delta_publish",
            Command::SowDelete => "sow_delete",
            Command::Flush => "flush",
            Command::Heartbeat => "heartbeat",
            Command::Subscribe => "subscribe",
            Command::DeltaSubscribe => "delta_subscribe",
            Command::Sow => "sow",
            Command::SowAndSubscribe => "sow_and_subscribe",
            Command::SowAndDeltaSubscribe => "sow_and_delta_subscribe",
            Command::Unsubscribe => "unsubscribe",
            Command::Ack => "ack",
            Command::Oof => "oof",
            Command::GroupBegin => "group_begin",
            Command::GroupEnd => "group_end",
            Command::Other(s) => s,
        }
    }

    fn from_bytes(b: &[u8]) -> Command {
        match b {
            b"logon" => Command::Logon,
            b"p" | b"publish" => Command::Publish,
            b"delta_publish" => Command::DeltaPublish,
            b"sow_delete" => Command::SowDelete,
            b"flush" => Command::Flush,
            b"heartbeat" => Command::Heartbeat,
            b"subscribe" => Command::Subscribe,
            b"delta_subscribe" => Command::DeltaSubscribe,
            b"sow" => Command::Sow,
            b"sow_and_subscribe" => Command::SowAndSubscribe,
            b"sow_and_delta_subscribe" => Command::SowAndDeltaSubscribe,
            b"unsubscribe" => Command::Unsubscribe,
            b"ack" => Command::Ack,
            b"oof" => Command::Oof,
            b"group_begin" => Command::GroupBegin,
            b"group_end" => Command::GroupEnd,
            other => Command::Other(String::from_utf8_lossy(other).into_owned()),
        }
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A frame header: every key of PROTOCOL.md section 3 as an optional typed field.
///
/// `Default` is the empty header; build one with struct update syntax:
/// ```
/// use actix_amps::protocol::{Command, Header, AckTypes};
/// let h = Header { command: Some(Command::Publish), topic: Some("orders".into()),
///                  ack_type: AckTypes::PERSISTED, seq: Some(7), ..Header::default() };
/// assert_eq!(h.to_json(), r#"{"c":"p","t":"orders","a":"persisted","s":7}"#);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// `c`: the command.
    pub command: Option<Command>,
    /// `cid`: the command id.
    pub cid: Option<String>,
    /// `t`: the topic.
    pub topic: Option<String>,
    /// `a`: ack types requested, or on an ack the single type it is.
    pub ack_type: AckTypes,
    /// `s`: publisher sequence number.
    pub seq: Option<u64>,
    /// `bm`: bookmark.
    pub bookmark: Option<String>,
    /// `status` of an ack.
    pub status: Option<Status>,
    /// `reason` of an ack.
    pub reason: Option<Reason>,
    /// `x`: correlation id.
    pub correlation_id: Option<String>,
    /// `e`: expiration in seconds.
    pub expiration: Option<u64>,
    /// `k`: SOW key of one record.
    pub sow_key: Option<String>,
    /// `sow_keys`: comma list of SOW keys.
    pub sow_keys: Option<String>,
    /// `filter`: content filter.
    pub filter: Option<String>,
    /// `o`: options (comma list).
    pub options: Option<String>,
    /// `client_name` (logon).
    pub client_name: Option<String>,
    /// `user_id` (logon).
    pub user_id: Option<String>,
    /// `pw` (logon). A [`Password`] never shows its text in `Debug` or `Display`.
    pub password: Option<Password>,
    /// `version` (logon, logon ack).
    pub version: Option<String>,
    /// `mt`: message type (logon).
    pub message_type: Option<String>,
    /// `sub_id`.
    pub sub_id: Option<String>,
    /// `query_id`.
    pub query_id: Option<String>,
    /// `sids`.
    pub sub_ids: Option<String>,
    /// `matches` (stats ack).
    pub matches: Option<u64>,
    /// `records_deleted` (stats ack).
    pub records_deleted: Option<u64>,
    /// `topic_matches` (stats ack).
    pub topic_matches: Option<u64>,
    /// `records_returned` (stats ack).
    pub records_returned: Option<u64>,
    /// `ts`: timestamp.
    pub timestamp: Option<String>,
    /// `l`: record length.
    pub length: Option<u64>,
    /// `bs`: batch size.
    pub batch_size: Option<u64>,
    /// `top_n`.
    pub top_n: Option<u64>,
    /// `orderby`.
    pub order_by: Option<String>,
    /// `lp`.
    pub lp: Option<u64>,
    /// `gseq`.
    pub gseq: Option<u64>,
}

impl Header {
    /// Appends the header as compact JSON to `dst`, fields in the order the official clients
    /// write them.
    pub fn write_to(&self, dst: &mut BytesMut) {
        let mut w = JsonObjectWriter::new(dst);
        if let Some(c) = &self.command {
            w.str("c", c.as_str());
        }
        w.opt_str("cid", &self.cid);
        w.opt_str("t", &self.topic);
        w.opt_str("client_name", &self.client_name);
        w.opt_str("user_id", &self.user_id);
        w.opt_str("mt", &self.message_type);
        w.acks("a", self.ack_type);
        w.opt_str("version", &self.version);
        if let Some(pw) = &self.password {
            w.str("pw", pw.expose());
        }
        if let Some(st) = &self.status {
            w.str("status", st.as_str());
        }
        if let Some(r) = &self.reason {
            w.str("reason", r.as_str());
        }
        w.opt_num_as_str("e", self.expiration);
        w.opt_str("x", &self.correlation_id);
        w.opt_num("s", self.seq);
        w.opt_str("bm", &self.bookmark);
        w.opt_str("k", &self.sow_key);
        w.opt_str("sow_keys", &self.sow_keys);
        w.opt_str("filter", &self.filter);
        w.opt_str("o", &self.options);
        w.opt_str("sub_id", &self.sub_id);
        w.opt_str("query_id", &self.query_id);
        w.opt_str("sids", &self.sub_ids);
        w.opt_num("matches", self.matches);
        w.opt_num("records_deleted", self.records_deleted);
        w.opt_num("topic_matches", self.topic_matches);
        w.opt_num("records_returned", self.records_returned);
        w.opt_str("ts", &self.timestamp);
        w.opt_num_as_str("l", self.length);
        w.opt_num("bs", self.batch_size);
        w.opt_num("top_n", self.top_n);
        w.opt_str("orderby", &self.order_by);
        w.opt_num("lp", self.lp);
        w.opt_num_as_str("gseq", self.gseq);
        w.finish();
    }

    /// The header as a compact JSON string (for tests, logs and tools).
    pub fn to_json(&self) -> String {
        let mut buf = BytesMut::with_capacity(128);
        self.write_to(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Parses the header at the start of `input` and returns it with the number of bytes it
    /// took, so the body starts at that offset. Tolerant as described in the module docs.
    pub fn parse(input: &[u8]) -> Result<(Header, usize), ProtocolError> {
        let mut p = Parser { input, pos: 0 };
        let mut h = Header::default();
        p.skip_ws();
        p.expect(b'{')?;
        p.skip_ws();
        if p.peek() == Some(b'}') {
            p.pos += 1;
            return Ok((h, p.pos));
        }
        loop {
            p.skip_ws();
            let key = p.string_raw()?;
            p.skip_ws();
            p.expect(b':')?;
            p.skip_ws();
            h.assign(&mut p, key)?;
            p.skip_ws();
            match p.next() {
                Some(b',') => continue,
                Some(b'}') => return Ok((h, p.pos)),
                Some(_) => return Err(p.error("expected ',' or '}' after a value")),
                None => return Err(p.error("header ends inside the object")),
            }
        }
    }

    fn assign(&mut self, p: &mut Parser<'_>, key: RawStr<'_>) -> Result<(), ProtocolError> {
        // Keys never need unescaping in practice; an escaped key is compared unescaped.
        let owned;
        let key: &[u8] = if key.escaped {
            owned = unescape(key.bytes, p)?;
            owned.as_bytes()
        } else {
            key.bytes
        };
        match key {
            b"c" | b"cmd" => self.command = Some(Command::from_bytes(&p.scalar_bytes()?)),
            b"cid" | b"cmd_id" => self.cid = Some(p.string_value()?),
            b"t" | b"topic" => self.topic = Some(p.string_value()?),
            b"a" | b"ack" | b"ack_type" => self.ack_type = AckTypes::parse(&p.scalar_bytes()?),
            b"s" | b"seq" => self.seq = Some(p.u64_value("s")?),
            b"bm" | b"bookmark" => self.bookmark = Some(p.string_value()?),
            b"status" => {
                let v = p.scalar_bytes()?;
                self.status = Some(match &*v {
                    b"success" => Status::Success,
                    b"failure" => Status::Failure,
                    b"retry" => Status::Retry,
                    other => Status::Other(String::from_utf8_lossy(other).into_owned()),
                });
            }
            b"reason" => {
                let v = p.scalar_bytes()?;
                self.reason = Some(Reason::from_str_lossless(&String::from_utf8_lossy(&v)));
            }
            b"x" | b"correlation_id" => self.correlation_id = Some(p.string_value()?),
            b"e" | b"expiration" => self.expiration = Some(p.u64_value("e")?),
            b"k" | b"sow_key" => self.sow_key = Some(p.string_value()?),
            b"sow_keys" => self.sow_keys = Some(p.string_value()?),
            b"filter" => self.filter = Some(p.string_value()?),
            b"o" | b"opts" | b"options" => self.options = Some(p.string_value()?),
            b"client_name" => self.client_name = Some(p.string_value()?),
            b"user_id" => self.user_id = Some(p.string_value()?),
            b"pw" | b"auth_key" => self.password = Some(Password::new(p.string_value()?)),
            b"version" => self.version = Some(p.string_value()?),
            b"mt" | b"message_type" => self.message_type = Some(p.string_value()?),
            b"sub_id" | b"subid" => self.sub_id = Some(p.string_value()?),
            b"query_id" => self.query_id = Some(p.string_value()?),
            b"sids" | b"sub_ids" => self.sub_ids = Some(p.string_value()?),
            b"matches" => self.matches = Some(p.u64_value("matches")?),
            b"records_deleted" => self.records_deleted = Some(p.u64_value("records_deleted")?),
            b"topic_matches" => self.topic_matches = Some(p.u64_value("topic_matches")?),
            b"records_returned" => self.records_returned = Some(p.u64_value("records_returned")?),
            b"ts" | b"timestamp" => self.timestamp = Some(p.string_value()?),
            b"l" => self.length = Some(p.u64_value("l")?),
            b"bs" | b"batch_size" => self.batch_size = Some(p.u64_value("bs")?),
            b"top_n" => self.top_n = Some(p.u64_value("top_n")?),
            b"orderby" => self.order_by = Some(p.string_value()?),
            b"lp" => self.lp = Some(p.u64_value("lp")?),
            b"gseq" => self.gseq = Some(p.u64_value("gseq")?),
            _ => p.skip_value(0)?,
        }
        Ok(())
    }
}

/// Writes one flat JSON object field by field, compactly. The only way headers are written, so
/// the typed [`Header`] and the borrowed publish header share one set of encoding rules.
pub(crate) struct JsonObjectWriter<'a> {
    dst: &'a mut BytesMut,
    first: bool,
}

impl<'a> JsonObjectWriter<'a> {
    pub(crate) fn new(dst: &'a mut BytesMut) -> JsonObjectWriter<'a> {
        dst.put_u8(b'{');
        JsonObjectWriter { dst, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.dst.put_u8(b',');
        }
        self.first = false;
        self.dst.put_u8(b'"');
        self.dst.put_slice(key.as_bytes());
        self.dst.put_slice(b"\":");
    }

    pub(crate) fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        write_json_string(self.dst, value);
    }

    pub(crate) fn opt_str(&mut self, key: &str, value: &Option<impl AsRef<str>>) {
        if let Some(v) = value {
            self.str(key, v.as_ref());
        }
    }

    pub(crate) fn num(&mut self, key: &str, value: u64) {
        self.key(key);
        let mut buf = itoa_buf::Buf::new();
        self.dst.put_slice(buf.digits(value));
    }

    pub(crate) fn opt_num(&mut self, key: &str, value: Option<u64>) {
        if let Some(v) = value {
            self.num(key, v);
        }
    }

    /// A number written as a JSON string, as the official clients write `e` and `l`.
    pub(crate) fn opt_num_as_str(&mut self, key: &str, value: Option<u64>) {
        if let Some(v) = value {
            let mut buf = itoa_buf::Buf::new();
            self.str(key, buf.format(v));
        }
    }

    pub(crate) fn acks(&mut self, key: &str, acks: AckTypes) {
        if acks.is_empty() {
            return;
        }
        self.key(key);
        self.dst.put_u8(b'"');
        for (i, t) in acks.iter().enumerate() {
            if i > 0 {
                self.dst.put_u8(b',');
            }
            self.dst.put_slice(t.as_str().as_bytes());
        }
        self.dst.put_u8(b'"');
    }

    pub(crate) fn finish(self) {
        self.dst.put_u8(b'}');
    }
}

/// Writes `s` as a JSON string: `"` and `\` escaped, control characters as `\u00XX`.
pub(crate) fn write_json_string(dst: &mut BytesMut, s: &str) {
    dst.put_u8(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0..=0x1f => {
                dst.put_slice(&bytes[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                dst.put_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 15) as usize],
                ]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        dst.put_slice(&bytes[start..i]);
        dst.put_slice(esc);
        start = i + 1;
    }
    dst.put_slice(&bytes[start..]);
    dst.put_u8(b'"');
}

/// A string's raw bytes between the quotes, and whether they hold escapes.
struct RawStr<'a> {
    bytes: &'a [u8],
    escaped: bool,
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

/// Deepest nesting accepted inside an unknown key's value (bounds the skipper's recursion).
const MAX_NESTING: usize = 32;

impl<'a> Parser<'a> {
    fn error(&self, what: &'static str) -> ProtocolError {
        ProtocolError::MalformedHeader {
            what,
            offset: self.pos,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn expect(&mut self, b: u8) -> Result<(), ProtocolError> {
        match self.next() {
            Some(x) if x == b => Ok(()),
            Some(_) => {
                self.pos -= 1;
                Err(self.error(match b {
                    b'{' => "header does not start with '{'",
                    b':' => "expected ':' after a key",
                    _ => "unexpected byte",
                }))
            }
            None => Err(self.error("header ends early")),
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.peek() {
            self.pos += 1;
        }
    }

    /// A string token, raw (escapes not resolved).
    fn string_raw(&mut self) -> Result<RawStr<'a>, ProtocolError> {
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a string"));
        }
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            match self.next() {
                Some(b'"') => {
                    return Ok(RawStr {
                        bytes: &self.input[start..self.pos - 1],
                        escaped,
                    });
                }
                Some(b'\\') => {
                    escaped = true;
                    if self.next().is_none() {
                        return Err(self.error("string ends inside an escape"));
                    }
                }
                Some(_) => {}
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    /// A bare number token (JSON number grammar, loosely: digits, sign, '.', 'e').
    fn number_raw(&mut self) -> Result<&'a [u8], ProtocolError> {
        let start = self.pos;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error("expected a string or a number"));
        }
        Ok(&self.input[start..self.pos])
    }

    /// A scalar (string or number) as bytes; borrowed unless it had escapes.
    fn scalar_bytes(&mut self) -> Result<std::borrow::Cow<'a, [u8]>, ProtocolError> {
        if self.peek() == Some(b'"') {
            let raw = self.string_raw()?;
            if raw.escaped {
                Ok(std::borrow::Cow::Owned(
                    unescape(raw.bytes, self)?.into_bytes(),
                ))
            } else {
                Ok(std::borrow::Cow::Borrowed(raw.bytes))
            }
        } else {
            Ok(std::borrow::Cow::Borrowed(self.number_raw()?))
        }
    }

    fn string_value(&mut self) -> Result<String, ProtocolError> {
        if self.peek() == Some(b'"') {
            let raw = self.string_raw()?;
            if raw.escaped {
                unescape(raw.bytes, self)
            } else {
                std::str::from_utf8(raw.bytes)
                    .map(str::to_owned)
                    .map_err(|_| self.error("string is not UTF-8"))
            }
        } else {
            let n = self.number_raw()?;
            // number_raw only accepts ASCII.
            Ok(String::from_utf8_lossy(n).into_owned())
        }
    }

    /// An unsigned integer, from a string or a bare number; never through f64.
    fn u64_value(&mut self, _key: &'static str) -> Result<u64, ProtocolError> {
        let v = self.scalar_bytes()?;
        let digits = v.trim_ascii();
        if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(self.error("expected an unsigned integer"));
        }
        digits.iter().try_fold(0u64, |acc, d| {
            acc.checked_mul(10)
                .and_then(|a| a.checked_add(u64::from(d - b'0')))
                .ok_or_else(|| self.error("integer out of range"))
        })
    }

    /// Skips a string, still checking its escapes: an invalid escape is an error wherever it is.
    fn skip_string(&mut self) -> Result<(), ProtocolError> {
        let raw = self.string_raw()?;
        if raw.escaped {
            unescape(raw.bytes, self)?;
        }
        Ok(())
    }

    /// Skips any JSON value (for unknown keys): scalars, literals, nested arrays and objects.
    fn skip_value(&mut self, depth: usize) -> Result<(), ProtocolError> {
        if depth > MAX_NESTING {
            return Err(self.error("value nested too deeply"));
        }
        match self.peek() {
            Some(b'"') => self.skip_string(),
            Some(b'{') | Some(b'[') => {
                let close = if self.peek() == Some(b'{') {
                    b'}'
                } else {
                    b']'
                };
                let is_obj = close == b'}';
                self.pos += 1;
                self.skip_ws();
                if self.peek() == Some(close) {
                    self.pos += 1;
                    return Ok(());
                }
                loop {
                    self.skip_ws();
                    if is_obj {
                        self.skip_string()?;
                        self.skip_ws();
                        self.expect(b':')?;
                        self.skip_ws();
                    }
                    self.skip_value(depth + 1)?;
                    self.skip_ws();
                    match self.next() {
                        Some(b',') => continue,
                        Some(c) if c == close => return Ok(()),
                        _ => return Err(self.error("malformed nested value")),
                    }
                }
            }
            Some(b't' | b'f' | b'n') => {
                for lit in [&b"true"[..], b"false", b"null"] {
                    if self.input[self.pos..].starts_with(lit) {
                        self.pos += lit.len();
                        return Ok(());
                    }
                }
                Err(self.error("unknown literal"))
            }
            _ => self.number_raw().map(drop),
        }
    }
}

/// One scalar header value as [`scan_fields`] found it, borrowed from the input.
pub(crate) struct ScannedValue<'a> {
    /// Offset in the input of the value's first byte (inside the quotes for a string).
    pub start: usize,
    /// The raw bytes: between the quotes for a string, the token for a bare number.
    pub raw: &'a [u8],
    /// The text with its escapes resolved, when the string held any (rare).
    pub unescaped: Option<String>,
}

/// Walks the header at the start of `input` without building a [`Header`]: calls `visit` with
/// each key and its scalar value (strings and numbers; nested values and literals of unknown
/// keys are checked and skipped) and returns the header's length, so the body starts there.
/// The same grammar and the same strictness about escapes as [`Header::parse`]; nothing is
/// allocated unless a value holds escapes. For the delivery path, where a frame's fields are
/// kept as byte ranges of the frame rather than copied into strings.
pub(crate) fn scan_fields(
    input: &[u8],
    mut visit: impl FnMut(&[u8], ScannedValue<'_>),
) -> Result<usize, ProtocolError> {
    let mut p = Parser { input, pos: 0 };
    p.skip_ws();
    p.expect(b'{')?;
    p.skip_ws();
    if p.peek() == Some(b'}') {
        return Ok(p.pos + 1);
    }
    loop {
        p.skip_ws();
        let key = p.string_raw()?;
        let owned_key;
        let key: &[u8] = if key.escaped {
            owned_key = unescape(key.bytes, &p)?;
            owned_key.as_bytes()
        } else {
            key.bytes
        };
        p.skip_ws();
        p.expect(b':')?;
        p.skip_ws();
        match p.peek() {
            Some(b'"') => {
                let raw = p.string_raw()?;
                let unescaped = if raw.escaped {
                    Some(unescape(raw.bytes, &p)?)
                } else {
                    None
                };
                let start = p.pos - 1 - raw.bytes.len();
                visit(
                    key,
                    ScannedValue {
                        start,
                        raw: raw.bytes,
                        unescaped,
                    },
                );
            }
            Some(b'0'..=b'9' | b'-' | b'+' | b'.') => {
                let start = p.pos;
                let raw = p.number_raw()?;
                visit(
                    key,
                    ScannedValue {
                        start,
                        raw,
                        unescaped: None,
                    },
                );
            }
            _ => p.skip_value(0)?,
        }
        p.skip_ws();
        match p.next() {
            Some(b',') => continue,
            Some(b'}') => return Ok(p.pos),
            Some(_) => return Err(p.error("expected ',' or '}' after a value")),
            None => return Err(p.error("header ends inside the object")),
        }
    }
}

/// Resolves JSON escapes (including `\uXXXX` and surrogate pairs) into a `String`.
fn unescape(raw: &[u8], p: &Parser<'_>) -> Result<String, ProtocolError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    let hex4 = |at: usize| -> Result<u32, ProtocolError> {
        let h = raw
            .get(at..at + 4)
            .ok_or_else(|| p.error("short \\u escape"))?;
        let s = std::str::from_utf8(h).map_err(|_| p.error("bad \\u escape"))?;
        u32::from_str_radix(s, 16).map_err(|_| p.error("bad \\u escape"))
    };
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let e = *raw
            .get(i + 1)
            .ok_or_else(|| p.error("string ends inside an escape"))?;
        i += 2;
        let ch = match e {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(i)?;
                i += 4;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    if raw.get(i..i + 2) != Some(b"\\u") {
                        return Err(p.error("unpaired surrogate in \\u escape"));
                    }
                    let lo = hex4(i + 2)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return Err(p.error("unpaired surrogate in \\u escape"));
                    }
                    i += 6;
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else {
                    hi
                };
                char::from_u32(code).ok_or_else(|| p.error("invalid \\u escape"))?
            }
            _ => return Err(p.error("unknown escape")),
        };
        let mut tmp = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
    }
    String::from_utf8(out).map_err(|_| p.error("string is not UTF-8"))
}

/// A stack buffer for an integer's digits (for [`super::publish::SeqTemplate`]).
pub(crate) fn itoa_digits() -> itoa_buf::Buf {
    itoa_buf::Buf::new()
}

/// A tiny stack buffer for formatting integers without allocating: two digits per division,
/// from a table (sequence numbers have 19 digits, and every publish writes one).
pub(crate) mod itoa_buf {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";

    pub struct Buf([u8; 20]);

    impl Buf {
        pub fn new() -> Buf {
            Buf([0; 20])
        }

        /// The decimal digits of `n`, as ASCII bytes.
        pub fn digits(&mut self, mut n: u64) -> &[u8] {
            let mut i = self.0.len();
            while n >= 100 {
                let pair = (n % 100) as usize * 2;
                n /= 100;
                i -= 2;
                self.0[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
            }
            if n >= 10 {
                let pair = n as usize * 2;
                i -= 2;
                self.0[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
            } else {
                i -= 1;
                self.0[i] = b'0' + n as u8;
            }
            &self.0[i..]
        }

        /// The decimal digits of `n` as a `str`.
        pub fn format(&mut self, n: u64) -> &str {
            // Only ASCII digits were written.
            std::str::from_utf8(self.digits(n)).unwrap_or("0")
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn formats_like_display() {
            for n in [
                0,
                1,
                9,
                10,
                99,
                100,
                101,
                999,
                1000,
                12345,
                u64::MAX,
                1795489793738000001,
            ]
            .into_iter()
            .chain((0..2000).map(|i| i * 7919))
            {
                assert_eq!(super::Buf::new().format(n), n.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ack::AckType;

    fn parse(s: &str) -> Header {
        let (h, n) = Header::parse(s.as_bytes()).expect("parses");
        assert_eq!(n, s.len());
        h
    }

    #[test]
    fn writes_compact_json_with_official_number_forms() {
        let h = Header {
            command: Some(Command::Publish),
            topic: Some("orders".into()),
            ack_type: AckTypes::PERSISTED,
            expiration: Some(30),
            correlation_id: Some("corr-1".into()),
            seq: Some(1795489793738000001),
            sow_key: Some("key-1".into()),
            ..Header::default()
        };
        assert_eq!(
            h.to_json(),
            r#"{"c":"p","t":"orders","a":"persisted","e":"30","x":"corr-1","s":1795489793738000001,"k":"key-1"}"#
        );
    }

    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        let h = Header {
            topic: Some("a\"b\\c\nd".into()),
            ..Header::default()
        };
        let json = h.to_json();
        assert_eq!(json, r#"{"t":"a\"b\\c\u000ad"}"#);
        assert_eq!(parse(&json).topic.as_deref(), Some("a\"b\\c\nd"));
    }

    #[test]
    fn reads_aliases_numbers_as_strings_and_ignores_unknown_keys() {
        let h = parse(
            r#"{ "cmd" : "publish", "cmd_id":7, "topic":"t1", "seq":"18446744073709551615", "ack_type":"processed,stats", "weird":{"x":[1,2,{"y":null}]}, "flag":true, "e":30 }"#,
        );
        assert_eq!(h.command, Some(Command::Publish));
        assert_eq!(h.cid.as_deref(), Some("7"));
        assert_eq!(h.topic.as_deref(), Some("t1"));
        assert_eq!(h.seq, Some(u64::MAX));
        assert!(h.ack_type.contains(AckType::Stats));
        assert_eq!(h.expiration, Some(30));
    }

    #[test]
    fn sequence_beyond_f64_precision_is_exact() {
        let h = parse(r#"{"c":"ack","a":"persisted","status":"success","s":1795489811140000003}"#);
        assert_eq!(h.seq, Some(1795489811140000003));
        assert_eq!(h.status, Some(Status::Success));
        assert!(h.ack_type.is_only(AckType::Persisted));
    }

    #[test]
    fn unicode_escapes_and_surrogates() {
        let h = parse(r#"{"t":"\u00e9\ud83d\ude00\/"}"#);
        assert_eq!(h.topic.as_deref(), Some("é😀/"));
        assert!(Header::parse(br#"{"t":"\ud83d"}"#).is_err());
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        for bad in [
            &b""[..],
            b"[",
            b"{\"c\"",
            b"{\"c\":}",
            b"{\"s\":\"x\"}",
            b"{\"s\":99999999999999999999}",
            b"{c:1}",
            b"{\"a\":1,",
        ] {
            assert!(
                matches!(
                    Header::parse(bad),
                    Err(ProtocolError::MalformedHeader { .. })
                ),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn odd_but_valid_json_is_accepted_and_invalid_escapes_are_not() {
        let h = parse(
            "{ \"c\" :\t\"ack\" ,\r\n \"a\": \"persisted\", \"status\":\"succ\\u0065ss\", \"x\":\"a\\/b\", \"s\" : 5 }",
        );
        assert_eq!(h.command, Some(Command::Ack));
        assert_eq!(h.status, Some(Status::Success));
        assert_eq!(h.correlation_id.as_deref(), Some("a/b"));
        assert_eq!(h.seq, Some(5));
        for bad in [
            &br#"{"c":"ack","status":"succ\xess"}"#[..],
            br#"{"c":"ack","unknown":"\q"}"#,
            br#"{"c":"ack","unknown":{"k\z":1}}"#,
            br#"{"c":"ack","unknown":["\u12"]}"#,
            br#"{"c":"ack","t":"\ud800x"}"#,
        ] {
            assert!(
                matches!(
                    Header::parse(bad),
                    Err(ProtocolError::MalformedHeader { .. })
                ),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn body_offset_is_after_closing_brace() {
        let (h, n) = Header::parse(br#"{"c":"p","t":"x"}{"id":1}"#).unwrap();
        assert_eq!(n, 17);
        assert_eq!(h.topic.as_deref(), Some("x"));
    }

    #[test]
    fn debug_hides_password_but_wire_carries_it() {
        let h = Header {
            password: Some(Password::new("secret")),
            ..Header::default()
        };
        assert!(!format!("{h:?}").contains("secret"));
        assert_eq!(h.to_json(), r#"{"pw":"secret"}"#);
    }
}
