//! Input records for `publish`: bytes up to a delimiter (`\n` by default), from stdin or a
//! file, published exactly as they are.
//!
//! AMPS carries bytes, so a record that is not UTF-8 is published unchanged, never refused.
//! With the default delimiter a `\r` before the `\n` is dropped too (CRLF files publish the
//! same records as LF files); with any other delimiter nothing but the delimiter is removed.
//! A last record without a delimiter is published. A record longer than the limit (the
//! client's largest frame) ends the run with an error naming its number, before it is stored,
//! so memory stays bounded whatever the input.

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Parses `--delimiter`: one character (one byte: `'|'`, `','`), an escape (`\n`, `\t`,
/// `\r`, `\0`), or a byte value as `0xNN` or a decimal number of two or three digits (as
/// AMPS `spark` takes it: `10` is a newline).
pub fn parse_delimiter(s: &str) -> Result<u8, String> {
    let bad = || {
        format!(
            "--delimiter {s:?}: give one ASCII character, \\n, \\t, \\r, \\0, 0xNN or a byte value"
        )
    };
    match s {
        "\\n" => return Ok(b'\n'),
        "\\t" => return Ok(b'\t'),
        "\\r" => return Ok(b'\r'),
        "\\0" => return Ok(0),
        _ => {}
    }
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u8::from_str_radix(hex, 16).map_err(|_| bad());
    }
    match s.as_bytes() {
        [b] if b.is_ascii() => Ok(*b),
        digits if digits.len() > 1 && digits.iter().all(u8::is_ascii_digit) => {
            s.parse::<u8>().map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

/// Reads records; every method is cancel safe (a partial record stays buffered).
pub struct Records<R> {
    reader: BufReader<R>,
    partial: Vec<u8>,
    delimiter: u8,
    max: usize,
    /// Records returned so far (the number of the last one).
    pub count: u64,
    /// Bytes consumed so far, delimiters included.
    pub bytes: u64,
    done: bool,
}

impl<R: AsyncRead + Unpin> Records<R> {
    /// Records of `inner` separated by `delimiter`, each at most `max` bytes.
    pub fn new(inner: R, delimiter: u8, max: usize) -> Records<R> {
        Records {
            reader: BufReader::with_capacity(64 * 1024, inner),
            partial: Vec::new(),
            delimiter,
            max,
            count: 0,
            bytes: 0,
            done: false,
        }
    }

    /// The next record, `None` at the end of the input.
    pub async fn next(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            if self.done {
                return Ok(None);
            }
            let line = self.count + 1;
            let available = self
                .reader
                .fill_buf()
                .await
                .map_err(|e| format!("reading record {line}: {e}"))?;
            if available.is_empty() {
                self.done = true;
                if self.partial.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(self.take()));
            }
            let (used, complete) = match memchr(self.delimiter, available) {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            let body = if complete { used - 1 } else { used };
            if self.partial.len() + body > self.max {
                return Err(format!(
                    "record {line} is longer than {} bytes (the largest message); nothing of it \
                     was stored",
                    self.max
                ));
            }
            self.partial.extend_from_slice(&available[..body]);
            self.reader.consume(used);
            self.bytes += used as u64;
            if complete {
                return Ok(Some(self.take()));
            }
        }
    }

    fn take(&mut self) -> Bytes {
        self.count += 1;
        if self.delimiter == b'\n' && self.partial.last() == Some(&b'\r') {
            self.partial.pop();
        }
        Bytes::from(std::mem::take(&mut self.partial))
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn all(input: &[u8], delimiter: u8, max: usize) -> Result<Vec<Vec<u8>>, String> {
        let mut r = Records::new(input, delimiter, max);
        let mut out = Vec::new();
        while let Some(rec) = r.next().now_or_never().expect("a slice never waits")? {
            out.push(rec.to_vec());
        }
        Ok(out)
    }

    #[test]
    fn records_are_bytes_between_delimiters() {
        let got = all(b"a\r\nb\n\n\xff\xfe\nlast", b'\n', 100).unwrap();
        assert_eq!(got, [&b"a"[..], b"b", b"", b"\xff\xfe", b"last"]);
        let got = all(b"x|y\r|", b'|', 100).unwrap();
        assert_eq!(got, [&b"x"[..], b"y\r"]);
        assert!(all(b"", b'\n', 100).unwrap().is_empty());
    }

    #[test]
    fn an_oversized_record_is_an_error_with_its_number() {
        let e = all(b"ok\n0123456789\n", b'\n', 5).unwrap_err();
        assert!(e.contains("record 2"), "{e}");
        assert!(all(b"12345\n", b'\n', 5).is_ok());
    }

    #[test]
    fn delimiters_parse() {
        assert_eq!(parse_delimiter("|"), Ok(b'|'));
        assert_eq!(parse_delimiter("\\n"), Ok(b'\n'));
        assert_eq!(parse_delimiter("\\0"), Ok(0));
        assert_eq!(parse_delimiter("0x1e"), Ok(0x1e));
        assert_eq!(parse_delimiter("10"), Ok(b'\n'));
        assert_eq!(parse_delimiter("5"), Ok(b'5'));
        assert!(parse_delimiter("").is_err());
        assert!(parse_delimiter("ab").is_err());
        assert!(parse_delimiter("300").is_err());
        assert!(parse_delimiter("é").is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Joining records with the delimiter gives back the input (no CR handling with `|`).
        #[test]
        fn records_round_trip(parts in proptest::collection::vec(
            proptest::collection::vec(0u8..=255, 0..20), 0..10)) {
            let parts: Vec<Vec<u8>> = parts.into_iter()
                .map(|p| p.into_iter().filter(|&b| b != b'|').collect()).collect();
            let mut input = Vec::new();
            for p in &parts {
                input.extend_from_slice(p);
                input.push(b'|');
            }
            let got = all(&input, b'|', 1000).unwrap();
            proptest::prop_assert_eq!(got, parts);
        }
    }
}
