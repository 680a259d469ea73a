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
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| UriError::MissingScheme(s.into()))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "tcp" => false,
        "tcps" => true,
        _ => return Err(UriError::UnsupportedScheme(scheme.into())),
    };
    // Drop any query string: this client takes its options from the builder.
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
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

    #[test]
    fn lists() {
        let l = parse_uri_list("tcp://a:1/amps/json, tcp://b:2/amps/json").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].host, "b");
        assert_eq!(parse_uri_list(" , "), Err(UriError::Empty));
    }
}
