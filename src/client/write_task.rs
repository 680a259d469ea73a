//! The write task: the one owner of a connection's socket write half.
//!
//! # The model
//!
//! Frames reach the socket from two places, and the task gathers both into one vectored
//! write per wake-up:
//!
//! - a **channel** from the connection actor: the logon, heartbeats, subscription commands
//!   (whole encoded frames, usually one each);
//! - the **publish store's outbound buffer**, taken directly from the
//!   [`SharedStore`] by this task ([`SharedStore::take_outbound`]): a replay after the logon,
//!   then every publish, sow_delete and flush command, already encoded back to back in one
//!   buffer. The first frame written after the task's last take wakes it through its
//!   [`Notify`]; frames written while the task is busy on the socket pile up and go out in its
//!   next write. So a burst costs one wake-up and one system call when it ends, and a lone
//!   message goes out at once: no timer holds anything back.
//!
//! Order: the store's frames keep the order the store wrote them (a replay before any later
//! write). Frames from the channel and from the store are independent streams; the logon goes
//! first because the store hands out nothing for a connection before its logon ack (its
//! `take_outbound` checks the epoch). Bytes taken count as sent: if the socket fails, the
//! store's replay after the next logon re-sends every stored message they held.

use std::io::IoSlice;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

use crate::client::store::shared::SharedStore;

/// Most channel frames gathered into one write (the store's buffer comes whole on top).
const MAX_CHANNEL_FRAMES: usize = 1024;

/// Most buffers handed to one `writev` call.
const MAX_IOVECS: usize = 64;

/// Where the task takes the publish store's frames for its connection.
pub(crate) struct StoreOutlet {
    pub shared: Arc<SharedStore>,
    /// Woken when the store's buffer gains its first frame after a take.
    pub ready: Arc<Notify>,
    /// The connection this task writes for.
    pub epoch: u64,
}

/// Writes until the channel closes (then writes what the store left for this connection and
/// shuts the write half down) or the socket fails (returns the error).
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    mut socket: W,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    outlet: StoreOutlet,
) -> Option<std::io::Error> {
    let mut batch: Vec<Bytes> = Vec::with_capacity(64);
    loop {
        tokio::select! {
            biased;
            frame = rx.recv() => match frame {
                Some(b) => batch.push(b),
                None => {
                    // The actor closed the channel (stopping): what the store left for this
                    // connection goes out before the write half is shut, as the channel's
                    // frames did.
                    outlet.shared.take_outbound(outlet.epoch, &mut batch);
                    if !batch.is_empty() {
                        if let Err(e) = write_all_vectored(&mut socket, &mut batch).await {
                            return Some(e);
                        }
                    }
                    break;
                }
            },
            () = outlet.ready.notified() => {}
        }
        while batch.len() < MAX_CHANNEL_FRAMES {
            match rx.try_recv() {
                Ok(b) => batch.push(b),
                Err(_) => break,
            }
        }
        outlet.shared.take_outbound(outlet.epoch, &mut batch);
        if batch.is_empty() {
            // A wake for frames another turn already took.
            continue;
        }
        if let Err(e) = write_all_vectored(&mut socket, &mut batch).await {
            return Some(e);
        }
        // A no-op for TCP; TLS may hold encrypted records until flushed.
        if let Err(e) = socket.flush().await {
            return Some(e);
        }
        batch.clear();
    }
    let _ = socket.shutdown().await;
    None
}

/// Writes every buffer of `bufs`, in order, with as few system calls as the socket allows.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    socket: &mut W,
    bufs: &mut [Bytes],
) -> std::io::Result<()> {
    let mut first = 0;
    while first < bufs.len() {
        let slices: Vec<IoSlice<'_>> = bufs[first..]
            .iter()
            .take(MAX_IOVECS)
            .map(|b| IoSlice::new(b))
            .collect();
        let mut n = socket.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while first < bufs.len() && n >= bufs[first].len() {
            n -= bufs[first].len();
            first += 1;
        }
        if n > 0 {
            let rest = bufs[first].slice(n..);
            bufs[first] = rest;
        }
    }
    Ok(())
}
