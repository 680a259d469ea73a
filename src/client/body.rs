//! [`Body`]: what a write's body can be made from.
//!
//! Bodies are [`Bytes`]: stored, replayed and sent without copying. [`Body`] only decides how
//! a value becomes `Bytes`: owned buffers (`Vec<u8>`, `String`, `Bytes`) and static data
//! (`&'static str`, `&'static [u8]` through `Bytes`) move in without a copy; a borrowed slice
//! (`&[u8]`, a byte-string literal `b"..."`) is copied once.
//!
//! ```
//! use actix_amps::client::Publish;
//! use bytes::Bytes;
//!
//! let line = vec![b'{', b'}'];
//! Publish::new("t", &line[..]);                  // borrowed: copied
//! Publish::new("t", line);                       // Vec<u8>: moved
//! Publish::new("t", b"{}");                      // byte string: copied
//! Publish::new("t", r#"{"id":1}"#);              // &'static str: no copy
//! Publish::new("t", String::from("{}"));         // String: moved
//! Publish::new("t", Bytes::from_static(b"{}"));  // Bytes: no copy
//! ```

use bytes::{Bytes, BytesMut};

/// A write's body (see the module docs); every constructor that takes a body takes
/// `impl Into<Body>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Body(pub Bytes);

impl From<Body> for Bytes {
    fn from(b: Body) -> Bytes {
        b.0
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        Body(b)
    }
}

impl From<&Bytes> for Body {
    fn from(b: &Bytes) -> Body {
        Body(b.clone())
    }
}

impl From<BytesMut> for Body {
    fn from(b: BytesMut) -> Body {
        Body(b.freeze())
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Body {
        Body(Bytes::from(v))
    }
}

impl From<String> for Body {
    fn from(s: String) -> Body {
        Body(Bytes::from(s))
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Body {
        Body(Bytes::from_static(s.as_bytes()))
    }
}

impl From<&[u8]> for Body {
    fn from(s: &[u8]) -> Body {
        Body(Bytes::copy_from_slice(s))
    }
}

impl<const N: usize> From<&[u8; N]> for Body {
    fn from(s: &[u8; N]) -> Body {
        Body(Bytes::copy_from_slice(s))
    }
}

impl From<Box<[u8]>> for Body {
    fn from(b: Box<[u8]>) -> Body {
        Body(Bytes::from(b))
    }
}
