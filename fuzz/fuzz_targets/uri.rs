//! `parse_uri` and `parse_uri_list` on arbitrary UTF-8.
//!
//! Checks: parsing never panics; a parsed URI keeps its documented invariants (non-empty host,
//! port in 1..=65535, message type of letters, digits, `_` and `-`); and its `Display` and `Debug`
//! never show the password: both are the same whatever the password is, and a sentinel password
//! never appears in them. (A plain "does not contain the password" test would misfire on
//! passwords that also occur in the user, host or fixed text, such as `tcp://a:a@a:1`.)

#![no_main]

use actix_amps::protocol::{parse_uri, parse_uri_list, AmpsUri, Password};
use libfuzzer_sys::fuzz_target;

const SENTINEL: &str = "\u{10FFFF}pw-sentinel\u{10FFFF}";

fn check(input: &str, uri: &AmpsUri) {
    assert!(!uri.host.is_empty(), "empty host from {input:?}");
    assert_ne!(uri.port, 0, "port 0 from {input:?}");
    assert!(
        !uri.message_type.is_empty()
            && uri
                .message_type
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "bad message type {:?} from {input:?}",
        uri.message_type
    );
    let _ = uri.authority();

    // The password must not matter to Display or Debug: replace it with a sentinel and compare.
    let shown = format!("{uri}");
    let debug = format!("{uri:?}");
    let mut masked = uri.clone();
    if masked.password.is_some() {
        masked.password = Some(Password::new(SENTINEL));
    }
    let masked_shown = format!("{masked}");
    let masked_debug = format!("{masked:?}");
    assert_eq!(masked_shown, shown, "Display depends on the password");
    assert_eq!(masked_debug, debug, "Debug depends on the password");
    // And the sentinel itself never appears (unless another field holds it; the user is
    // percent-decoded, so it can).
    let elsewhere =
        uri.host.contains(SENTINEL) || uri.user.as_deref().unwrap_or("").contains(SENTINEL);
    if !elsewhere {
        assert!(
            !masked_shown.contains(SENTINEL),
            "Display shows the password"
        );
        assert!(!masked_debug.contains(SENTINEL), "Debug shows the password");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(uri) = parse_uri(input) {
        check(input, &uri);
    }
    if let Ok(list) = parse_uri_list(input) {
        assert!(!list.is_empty(), "empty list from {input:?}");
        for uri in &list {
            check(input, uri);
        }
    }
});
