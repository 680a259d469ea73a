//! Watch a subscription from the command line: a raw-socket AMPS subscriber for trying the
//! embedded server (`actix-amps serve`) by hand.
//!
//! ```text
//! cargo run --example watch -- --uri tcp://127.0.0.1:9007/amps/json --topic orders \
//!     [--filter "/qty > 5"] [--sow] [--delta] [--oof] [--bookmark 0] [--name watcher]
//! ```
//!
//! It logs on, places one subscription (`subscribe`; `sow_and_subscribe` with `--sow`;
//! `delta_` variants with `--delta`; option `oof` with `--oof`; a bookmark replay with
//! `--bookmark`), then prints every frame the server sends as one JSON line on stdout,
//! `{"header":{...},"data":"..."}`, with the records of a `sow` frame one per line, until
//! Ctrl-C or the server closes the connection. Errors go to stderr; a refused subscription
//! exits with status 2. (The client's own `actix-amps subscribe` comes with its subscription
//! support; this example only speaks raw frames.)

use std::net::ToSocketAddrs;

use actix_amps::protocol::{
    parse_uri, sow_records, AckTypes, AmpsCodec, Command, Frame, Header, Status,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

struct Args {
    uri: String,
    topic: String,
    filter: Option<String>,
    bookmark: Option<String>,
    name: String,
    sow: bool,
    delta: bool,
    oof: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        uri: "tcp://127.0.0.1:9007/amps/json".into(),
        topic: String::new(),
        filter: None,
        bookmark: None,
        name: format!("watch-{}", std::process::id()),
        sow: false,
        delta: false,
        oof: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--uri" => a.uri = val()?,
            "--topic" => a.topic = val()?,
            "--filter" => a.filter = Some(val()?),
            "--bookmark" => a.bookmark = Some(val()?),
            "--name" => a.name = val()?,
            "--sow" => a.sow = true,
            "--delta" => a.delta = true,
            "--oof" => a.oof = true,
            other => return Err(format!("unknown argument {other:?} (see the file's docs)")),
        }
    }
    if a.topic.is_empty() {
        return Err("--topic is required".into());
    }
    Ok(a)
}

fn print(f: &Frame) {
    let line = |header: String, data: &[u8]| {
        let data = serde_json::Value::String(String::from_utf8_lossy(data).into_owned());
        println!("{{\"header\":{header},\"data\":{data}}}");
    };
    if f.header.command == Some(Command::Sow) {
        match sow_records(&f.body) {
            Ok(records) => {
                for r in records {
                    let mut h = r.header.clone();
                    h.command = Some(Command::Sow);
                    h.query_id = f.header.query_id.clone();
                    h.topic = f.header.topic.clone();
                    line(h.to_json(), &r.data);
                }
            }
            Err(e) => eprintln!("watch: malformed sow frame: {e}"),
        }
        return;
    }
    line(f.header.to_json(), &f.body);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    match run().await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("watch: error: {e}");
            std::process::exit(1);
        }
    }
}

async fn run() -> Result<i32, String> {
    let args = parse_args()?;
    let uri = parse_uri(&args.uri).map_err(|e| e.to_string())?;
    let addr = (uri.host.as_str(), uri.port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut conn = Framed::new(stream, AmpsCodec::default());
    let logon = Header {
        command: Some(Command::Logon),
        cid: Some("logon".into()),
        client_name: Some(args.name.clone()),
        message_type: Some("json".into()),
        ack_type: AckTypes::PROCESSED,
        version: Some(format!("{}:watch", env!("CARGO_PKG_VERSION"))),
        ..Header::default()
    };
    conn.send(Frame::header_only(logon))
        .await
        .map_err(|e| e.to_string())?;
    let command = match (args.sow, args.delta) {
        (false, false) => Command::Subscribe,
        (false, true) => Command::DeltaSubscribe,
        (true, false) => Command::SowAndSubscribe,
        (true, true) => Command::SowAndDeltaSubscribe,
    };
    let sub = Header {
        command: Some(command),
        topic: Some(args.topic.clone()),
        cid: Some("watch".into()),
        filter: args.filter.clone(),
        ack_type: AckTypes::PROCESSED,
        sub_id: Some("watch".into()),
        query_id: args.sow.then(|| "watch".into()),
        batch_size: args.sow.then_some(100),
        bookmark: args.bookmark.clone(),
        options: args.oof.then(|| "oof".into()),
        ..Header::default()
    };
    conn.send(Frame::header_only(sub))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let next = tokio::select! {
            f = conn.next() => f,
            _ = tokio::signal::ctrl_c() => return Ok(0),
        };
        let f = match next {
            None => {
                eprintln!("watch: the server closed the connection");
                return Ok(1);
            }
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(f)) => f,
        };
        if f.header.command == Some(Command::Ack) {
            let failed = f.header.status == Some(Status::Failure);
            let what = f.header.cid.as_deref().unwrap_or("");
            match (what, failed) {
                (_, true) => {
                    let reason = f.header.reason.as_ref().map_or("", |r| r.as_str());
                    eprintln!("watch: {what} refused: {reason}");
                    return Ok(2);
                }
                ("logon", false) => eprintln!("watch: logged on as {}", args.name),
                ("watch", false) => eprintln!("watch: subscribed to {}", args.topic),
                _ => print(&f),
            }
            continue;
        }
        print(&f);
    }
}
