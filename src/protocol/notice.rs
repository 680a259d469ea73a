//! Closing notices: how the embedded server tells a client why it is closing the connection
//! when there is no command to answer.
//!
//! AMPS answers a refused command with a failure ack carrying the command's `cid`; a refused
//! logon is such an ack, and the client reports it as a refused logon. But some closes answer
//! no command: no logon arrived in time, a frame stalled half-way, the client stopped reading,
//! the server's memory budget ran out. For those the embedded server sends, as the last frame
//! on the connection, a *closing notice*: a `processed` failure ack without a `cid`, with the
//! reason and the option `disconnect`:
//!
//! ```text
//! {"c":"ack","a":"processed","status":"failure","reason":"logon timeout","o":"disconnect"}
//! ```
//!
//! A client of this crate reports it as the reason of the close (a refused logon while logging
//! on, [`ConnectError::ClosedByServer`](crate::error::ConnectError::ClosedByServer) after). Any
//! other AMPS client sees an ack for no command of its own, which they ignore or hand to their
//! last-chance handler. The notice is best effort: a peer that does not read never gets it.
//!
//! ```
//! use actix_amps::protocol::{closing_notice, closing_reason, Reason};
//! let notice = closing_notice(Reason::LogonTimeout);
//! assert_eq!(closing_reason(&notice), Some(&Reason::LogonTimeout));
//! ```

use super::ack::{AckType, AckTypes, Reason, Status};
use super::header::{Command, Header};

/// The `o` value that marks a closing notice.
pub const CLOSING_OPTION: &str = "disconnect";

/// The closing notice for `reason`.
pub fn closing_notice(reason: Reason) -> Header {
    Header {
        command: Some(Command::Ack),
        ack_type: AckTypes::only(AckType::Processed),
        status: Some(Status::Failure),
        reason: Some(reason),
        options: Some(CLOSING_OPTION.to_owned()),
        ..Header::default()
    }
}

/// The reason of a closing notice; `None` for any other frame (a notice has no `cid`, is a
/// `processed` failure ack and carries the `disconnect` option and a reason).
pub fn closing_reason(h: &Header) -> Option<&Reason> {
    let is_notice = h.command == Some(Command::Ack)
        && h.cid.is_none()
        && h.ack_type == AckTypes::only(AckType::Processed)
        && h.status == Some(Status::Failure)
        && h.options.as_deref() == Some(CLOSING_OPTION);
    if is_notice {
        h.reason.as_ref()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode_frame, encode_parts};
    use bytes::BytesMut;

    #[test]
    fn a_notice_round_trips_and_nothing_else_is_one() {
        let mut out = BytesMut::new();
        encode_parts(&closing_notice(Reason::SlowConsumer), b"", &mut out);
        let frame = decode_frame(out.split_off(4).freeze()).unwrap();
        assert_eq!(closing_reason(&frame.header), Some(&Reason::SlowConsumer));

        let with_cid = Header {
            cid: Some("logon-1".into()),
            ..closing_notice(Reason::AuthFailure)
        };
        assert_eq!(
            closing_reason(&with_cid),
            None,
            "a cid makes it a command's ack"
        );
        let plain_failure = Header {
            options: None,
            ..closing_notice(Reason::NotSupported)
        };
        assert_eq!(closing_reason(&plain_failure), None);
        let persisted = Header {
            ack_type: AckTypes::only(AckType::Persisted),
            ..closing_notice(Reason::Duplicate)
        };
        assert_eq!(closing_reason(&persisted), None);
        let success = Header {
            status: Some(Status::Success),
            ..closing_notice(Reason::LogonTimeout)
        };
        assert_eq!(closing_reason(&success), None);
    }
}
