//! `Header::parse` on arbitrary bytes.
//!
//! Checks: parsing never panics; on success the reported length lies inside the input and ends
//! on the closing `}`; `to_json()` of the result
//! - has no whitespace outside strings (PROTOCOL.md section 2: the official client hangs or
//!   disconnects on it),
//! - is valid JSON (serde_json) forming a flat object of strings and unsigned integers without
//!   repeated keys,
//! - parses back to an equal header, consuming all of it,
//! - and is a fixed point (writing the re-parsed header gives the same text).

#![no_main]

use actix_amps::protocol::Header;
use libfuzzer_sys::fuzz_target;

/// The byte offset of the first JSON whitespace byte outside a string, if any.
fn whitespace_outside_strings(json: &[u8]) -> Option<usize> {
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in json.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            return Some(i);
        }
    }
    None
}

/// Asserts that `json` is one flat JSON object of strings and u64 numbers with unique keys.
fn check_flat_object(json: &str) {
    let value: serde_json::Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("to_json() is not valid JSON ({e}): {json}"));
    let obj = value
        .as_object()
        .unwrap_or_else(|| panic!("to_json() is not an object: {json}"));
    for (k, v) in obj {
        assert!(
            v.is_string() || v.is_u64(),
            "key {k:?} has a value that is neither a string nor a u64: {json}"
        );
    }
    // serde_json keeps the last of repeated keys: count the keys the writer emitted instead.
    let emitted = count_top_level_keys(json.as_bytes());
    assert_eq!(emitted, obj.len(), "to_json() repeats a key: {json}");
}

/// Keys of a compact flat object: strings directly followed by `:` at depth 1.
fn count_top_level_keys(json: &[u8]) -> usize {
    let mut count = 0;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in json.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                if json.get(i + 1) == Some(&b':') {
                    count += 1;
                }
            }
        } else if b == b'"' {
            in_string = true;
        }
    }
    count
}

fuzz_target!(|data: &[u8]| {
    let Ok((header, used)) = Header::parse(data) else {
        return;
    };
    assert!(used >= 2 && used <= data.len(), "bad length {used}");
    assert_eq!(
        data[used - 1],
        b'}',
        "length does not end on the closing brace"
    );

    let json = header.to_json();
    if let Some(at) = whitespace_outside_strings(json.as_bytes()) {
        panic!("whitespace at byte {at} outside strings: {json}");
    }
    let (again, n) = Header::parse(json.as_bytes())
        .unwrap_or_else(|e| panic!("to_json() does not parse back ({e}): {json}"));
    assert_eq!(n, json.len(), "re-parse stopped early: {json}");
    assert_eq!(
        again, header,
        "to_json() parses to a different header: {json}"
    );
    assert_eq!(again.to_json(), json, "to_json() is not a fixed point");
    check_flat_object(&json);
});
