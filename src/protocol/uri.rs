//! Server URIs: `tcp://[user[:password]@]host:port/amps/<message type>` and `tcps://` for TLS.
//!
//! The message type is the last segment of the path (`/amps/json` gives `json`; no path gives
//! `json`). User and password may be percent-encoded. A [`Password`] never shows its text in
//! `Debug` or `Display`, and an [`AmpsUri`] displays with the password masked, so URIs can be
//! logged. [`parse_uri_list`] reads several URIs (comma or whitespace separated) for failover.

use std::fmt;
use std::str::FromStr;

use crate::error::UriError;

/// A secret that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Password {
        Password(s.into())
    }

    /// The secret itself, for putting on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One parsed server URI.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AmpsUri {
    /// `tcps://`: the connection must use TLS (never falls back to plaintext).
    pub tls: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `user` from `user[:password]@`.
    pub user: Option<String>,
    /// `password` from `user:password@`.
    pub password: Option<Password>,
    /// Message type sent in the logon's `mt` (from the path; `json` when absent).
    pub message_type: String,
}

impl AmpsUri {
    /// `host:port` for connecting (IPv6 hosts in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for AmpsUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "tcps" } else { "tcp" };
        write!(f, "{scheme}://")?;
        if let Some(user) = &self.user {
            f.write_str(user)?;
            if self.password.is_some() {
                f.write_str(":***")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}/amps/{}", self.authority(), self.message_type)
    }
}

impl FromStr for AmpsUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<AmpsUri, UriError> {
        parse_uri(s)
    }
}

/// Parses one URI.
pub fn parse_uri(input: &str) -> Result<AmpsUri, UriError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(UriError::Empty);
    }
    // Errors echo only text that cannot hold a password: the input with its credentials
    // masked, or fragments that lie after the credentials' `@`.
    let (scheme, rest) = s
        .split_once("://")
        .filter(|(scheme, _)| is_scheme(scheme))
        .ok_or_else(|| UriError::MissingScheme(redact_uri(s)))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "tcp" => false,
        "tcps" => true,
        _ => return Err(UriError::UnsupportedScheme(scheme.into())),
    };
    // Drop any query string: this client takes its options from the builder.
    let full = rest;
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    // An `@` past the host: credentials holding `/`, `?` or `#`, which end the authority
    // early. Parsing on would connect somewhere wrong and echo pieces of the password.
    if full[authority.len()..].contains('@') {
        return Err(UriError::UnescapedCredentials);
    }
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(ui) => {
            let (u, p) = match ui.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (ui, None),
            };
            if u.is_empty() {
                return Err(UriError::EmptyUser);
            }
            (
                Some(percent_decode(u)?),
                p.map(percent_decode).transpose()?.map(Password),
            )
        }
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or(UriError::MissingHost)?;
        let port = after.strip_prefix(':').ok_or(UriError::MissingPort)?;
        (h, port)
    } else {
        hostport.rsplit_once(':').ok_or(UriError::MissingPort)?
    };
    if host.is_empty() {
        return Err(UriError::MissingHost);
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '[' | ']' | '@' | '/'))
        || (host.contains(':') && !hostport.starts_with('['))
    {
        return Err(UriError::BadHost(host.to_owned()));
    }
    let port: u16 = port.parse().map_err(|_| UriError::BadPort(port.into()))?;
    if port == 0 {
        return Err(UriError::BadPort("0".into()));
    }
    let segments: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let message_type = match segments.as_slice() {
        [] => "json".to_owned(),
        ["amps"] => "json".to_owned(),
        [.., last] => (*last).to_owned(),
    };
    if !message_type
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(UriError::BadMessageType(message_type));
    }
    Ok(AmpsUri {
        tls,
        host: host.to_owned(),
        port,
        user,
        password,
        message_type,
    })
}

/// Parses a list of URIs separated by commas or whitespace (at least one).
pub fn parse_uri_list(input: &str) -> Result<Vec<AmpsUri>, UriError> {
    let list = input
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(parse_uri)
        .collect::<Result<Vec<_>, _>>()?;
    if list.is_empty() {
        return Err(UriError::Empty);
    }
    Ok(list)
}

/// Whether `s` is a URI scheme: a letter, then letters, digits, `+`, `-` or `.` (RFC 3986).
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `input`, a URI that need not parse, with its password masked: everything between the user
/// name's `:` and the last `@` becomes `***`. Text without `user:password@` is returned as is.
/// For showing a URI the user typed in an error message.
///
/// ```
/// use actix_amps::protocol::redact_uri;
/// assert_eq!(
///     redact_uri("tcp://alice:s3cret@127.0.0.1:notaport/amps/json"),
///     "tcp://alice:***@127.0.0.1:notaport/amps/json"
/// );
/// // A password holding `/` or `@`, or no scheme at all, is masked just the same.
/// assert_eq!(redact_uri("tcp://alice:s3/cr@t@h:1"), "tcp://alice:***@h:1");
/// assert_eq!(redact_uri("alice:s3cret@h:1"), "alice:***@h:1");
/// ```
pub fn redact_uri(input: &str) -> String {
    let start = match input.find("://") {
        Some(i) if is_scheme(&input[..i]) => i + 3,
        _ => 0,
    };
    let Some(at) = input.rfind('@').filter(|at| *at >= start) else {
        return input.to_owned();
    };
    match input[start..at].find(':') {
        Some(colon) => format!("{}:***{}", &input[..start + colon], &input[at..]),
        None => input.to_owned(),
    }
}

/// Free text (an argument parser's message, say) with the password of every URI in it masked
/// as [`redact_uri`] does. A quoted part (`"..."`, `'...'` or `` `...` ``) is one URI
/// candidate, so a quoted password holding spaces is masked whole; elsewhere words are split
/// at whitespace. Best effort for text this crate did not build: its own errors never hold a
/// password in the first place.
///
/// ```
/// use actix_amps::protocol::mask_credentials;
/// assert_eq!(
///     mask_credentials("unexpected argument 'tcp://bob:pa ss@h:1' found"),
///     "unexpected argument 'tcp://bob:***@h:1' found"
/// );
/// ```
pub fn mask_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        // A quoted part (with its quotes, when closed) or a bare word.
        let (open, word, close, tail) = if matches!(c, '"' | '\'' | '`') {
            let inner = &rest[1..];
            // The closing quote; one escaped by a backslash (Debug output) does not count.
            let mut end = None;
            let mut escaped = false;
            for (i, ch) in inner.char_indices() {
                if ch == c && !escaped {
                    end = Some(i);
                    break;
                }
                escaped = ch == '\\' && !escaped;
            }
            match end {
                Some(i) => (Some(c), &inner[..i], Some(c), &inner[i + 1..]),
                None => (Some(c), inner, None, ""),
            }
        } else {
            let end = rest
                .find(|ch: char| ch.is_whitespace() || matches!(ch, '"' | '\'' | '`'))
                .unwrap_or(rest.len());
            (None, &rest[..end], None, &rest[end..])
        };
        out.extend(open);
        out.push_str(&redact_uri(word));
        out.extend(close);
        rest = tail;
    }
    out
}

fn percent_decode(s: &str) -> Result<String, UriError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(UriError::BadPercentEncoding)?;
            let hex = std::str::from_utf8(hex).map_err(|_| UriError::BadPercentEncoding)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| UriError::BadPercentEncoding)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UriError::BadPercentEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_uri() {
        let u = parse_uri("tcp://alice:s%40cret@127.0.0.1:9007/amps/json").unwrap();
        assert!(!u.tls);
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 9007);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_ref().map(Password::expose), Some("s@cret"));
        assert_eq!(u.message_type, "json");
        let shown = format!("{u} {u:?}");
        assert!(
            !shown.contains("s@cret") && !shown.contains("s%40cret"),
            "{shown}"
        );
        assert_eq!(u.to_string(), "tcp://alice:***@127.0.0.1:9007/amps/json");
    }

    #[test]
    fn tls_ipv6_and_message_type() {
        let u = parse_uri("tcps://[::1]:9443/amps/fix").unwrap();
        assert!(u.tls);
        assert_eq!(u.host, "::1");
        assert_eq!(u.authority(), "[::1]:9443");
        assert_eq!(u.message_type, "fix");
        assert_eq!(parse_uri("tcp://h:1").unwrap().message_type, "json");
    }

    #[test]
    fn bad_uris_are_typed() {
        assert_eq!(parse_uri(""), Err(UriError::Empty));
        assert!(matches!(
            parse_uri("http://h:1/amps/json"),
            Err(UriError::UnsupportedScheme(_))
        ));
        assert!(matches!(parse_uri("h:1"), Err(UriError::MissingScheme(_))));
        assert_eq!(
            parse_uri("tcp://host/amps/json"),
            Err(UriError::MissingPort)
        );
        assert!(matches!(
            parse_uri("tcp://host:99999/amps/json"),
            Err(UriError::BadPort(_))
        ));
        assert_eq!(parse_uri("tcp://:1/amps/json"), Err(UriError::MissingHost));
        // Found by the uri fuzz target: such a host would not display as a parseable URI.
        assert!(matches!(
            parse_uri("tcp://a]:b:1"),
            Err(UriError::BadHost(_))
        ));
        assert!(matches!(
            parse_uri("tcp://a b:1"),
            Err(UriError::BadHost(_))
        ));
        assert_eq!(
            parse_uri("tcp://u:%zz@h:1"),
            Err(UriError::BadPercentEncoding)
        );
        assert!(matches!(
            parse_uri("tcp://h:1/amps/j son"),
            Err(UriError::BadPort(_)) | Err(UriError::BadMessageType(_))
        ));
    }

    /// Password pieces that must never appear in an error (a password holding `/` is cut
    /// in two by a naive parser, so each piece is checked).
    const PIECES: [&str; 2] = ["Kq7wPiece", "Zv3mPiece"];

    /// The index of a variant, by an exhaustive match: a new variant does not compile until it
    /// has a case below.
    fn variant(e: &UriError) -> usize {
        match e {
            UriError::Empty => 0,
            UriError::MissingScheme(_) => 1,
            UriError::UnsupportedScheme(_) => 2,
            UriError::EmptyUser => 3,
            UriError::MissingHost => 4,
            UriError::BadHost(_) => 5,
            UriError::MissingPort => 6,
            UriError::BadPort(_) => 7,
            UriError::BadMessageType(_) => 8,
            UriError::BadPercentEncoding => 9,
            UriError::UnescapedCredentials => 10,
        }
    }

    #[test]
    fn every_uri_error_masks_the_credentials_in_its_input() {
        let pw = format!("{}/{}", PIECES[0], PIECES[1]);
        let plain = PIECES[0];
        let cases: Vec<(String, usize)> = vec![
            ("   ".to_owned(), 0),
            (format!("alice:{plain}@127.0.0.1:9007/amps/json"), 1),
            (format!("tcp:/alice:{plain}@127.0.0.1:9007/amps/json"), 1),
            (format!("alice:{plain}://x@127.0.0.1:9007"), 1),
            (format!("http://alice:{plain}@127.0.0.1:9007/amps/json"), 2),
            (format!("tcp://:{plain}@127.0.0.1:9007/amps/json"), 3),
            (format!("tcp://alice:{plain}@:9007/amps/json"), 4),
            (format!("tcp://alice:{plain}@a b:9007/amps/json"), 5),
            (format!("tcp://alice:{plain}@[::1/amps/json"), 4),
            (format!("tcp://alice:{plain}@127.0.0.1/amps/json"), 6),
            (
                format!("tcp://alice:{plain}@127.0.0.1:notaport/amps/json"),
                7,
            ),
            (format!("tcp://alice:{plain}@127.0.0.1:0/amps/json"), 7),
            (format!("tcp://alice:{plain}@127.0.0.1:9007/amps/j$on"), 8),
            (
                format!("tcp://alice:{plain}%zz@127.0.0.1:9007/amps/json"),
                9,
            ),
            (format!("tcp://alice:{pw}@127.0.0.1:9007/amps/json"), 10),
            (format!("tcp://alice:{}?{}@h:1", PIECES[0], PIECES[1]), 10),
            (format!("tcp://alice:{}#{}@h:1", PIECES[0], PIECES[1]), 10),
            (
                format!("tcp://alice:{}/{}@h:notaport", PIECES[0], PIECES[1]),
                10,
            ),
        ];
        let mut seen = [false; 11];
        for (input, expected) in &cases {
            let err = parse_uri(input).expect_err(input);
            assert_eq!(variant(&err), *expected, "{input}: {err:?}");
            seen[*expected] = true;
            let shown = format!("{err} {err:?}");
            for piece in PIECES {
                assert!(!shown.contains(piece), "{input} gives {shown}");
            }
            // Lists report the same errors.
            let listed = parse_uri_list(&format!("tcp://h:1, {input}"));
            if let Err(e) = listed {
                let shown = format!("{e} {e:?}");
                assert!(PIECES.iter().all(|p| !shown.contains(p)), "{shown}");
            }
        }
        assert!(seen.iter().all(|s| *s), "every variant tested: {seen:?}");
        // The masked input still says what was typed, minus the secret.
        assert_eq!(
            parse_uri(&format!("alice:{plain}@h:1")),
            Err(UriError::MissingScheme("alice:***@h:1".into()))
        );
        assert_eq!(
            parse_uri("tcp://alice:x@h:notaport"),
            Err(UriError::BadPort("notaport".into()))
        );
    }

    #[test]
    fn redaction_of_text_that_does_not_parse() {
        assert_eq!(redact_uri("tcp://h:1/amps/json"), "tcp://h:1/amps/json");
        assert_eq!(redact_uri("tcp://alice@h:1"), "tcp://alice@h:1");
        assert_eq!(redact_uri("tcp://a:b:c@d@h:1"), "tcp://a:***@h:1");
        assert_eq!(redact_uri("x:/a:b@h"), "x:***@h");
        assert_eq!(
            mask_credentials(r#"--uri "tcp://a:p\"w@h:1": bad, also tcp://b:q@h:2 and 'c:r@h'"#),
            r#"--uri "tcp://a:***@h:1": bad, also tcp://b:***@h:2 and 'c:***@h'"#
        );
        assert_eq!(
            mask_credentials("unterminated 'tcp://a:pw@h"),
            "unterminated 'tcp://a:***@h"
        );
        assert_eq!(mask_credentials("  plain  text "), "  plain  text ");
        assert_eq!(mask_credentials("ünïcode 'x' \"y\""), "ünïcode 'x' \"y\"");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Whatever surrounds it, a password written as `user:<pw>@` never survives masking.
        #[test]
        fn masking_never_lets_a_password_through(
            // Any printable text without quotes (an unbalanced quote before the URI would
            // pair with the one that opens it).
            before in "[ !#-&(-_a-~]{0,12}",
            pw in "[A-Za-z0-9/?#:@ ]{1,16}",
            host in "[a-z0-9.:]{0,10}",
        ) {
            let secret = format!("Zq{pw}Xj");
            let input = format!("tcp://alice:{secret}@{host}");
            let masked = redact_uri(&input);
            proptest::prop_assert!(!masked.contains(&secret), "{}", masked);
            let err = parse_uri(&input).err().map(|e| format!("{e} {e:?}")).unwrap_or_default();
            proptest::prop_assert!(!err.contains(&secret), "{}", err);
            let text = mask_credentials(&format!("{before} '{input}'"));
            proptest::prop_assert!(!text.contains(&secret), "{}", text);
        }
    }

    #[test]
    fn lists() {
        let l = parse_uri_list("tcp://a:1/amps/json, tcp://b:2/amps/json").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].host, "b");
        assert_eq!(parse_uri_list(" , "), Err(UriError::Empty));
    }
}
