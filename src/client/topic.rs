//! [`Topic`]: a topic name that is cheap to clone.
//!
//! A publish loop that builds every [`Publish`](super::Publish) from the same `&str` pays a
//! `String` allocation per message for its topic; one built from a [`Topic`] pays a reference
//! count increment. The publish store keeps the same shared string for every stored message of
//! that topic, so a `Topic` costs nothing per message after it is made.
//!
//! ```
//! use actix_amps::client::{Publish, Topic};
//!
//! let orders = Topic::new("orders");
//! let a = Publish::new(&orders, r#"{"id":1}"#); // no allocation for the topic
//! let b = Publish::new("orders", r#"{"id":2}"#); // `&str` and `String` still work
//! assert_eq!(a.topic, b.topic);
//! assert_eq!(&*orders, "orders");
//! ```

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A topic name: an immutable, reference-counted string (`Arc<str>`), cloned without
/// allocating. Compares, hashes and prints as the string it holds.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Topic(Arc<str>);

impl Topic {
    /// A topic from anything string-like (allocates once).
    pub fn new(name: impl AsRef<str>) -> Topic {
        Topic(Arc::from(name.as_ref()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string, as the publish store keeps it.
    pub fn into_arc(self) -> Arc<str> {
        self.0
    }

    /// Whether two topics share one allocation (a cheap first check before comparing text).
    pub(crate) fn ptr_eq(&self, other: &Arc<str>) -> bool {
        Arc::ptr_eq(&self.0, other)
    }
}

impl Deref for Topic {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Topic {
    fn from(s: &str) -> Topic {
        Topic(Arc::from(s))
    }
}

impl From<String> for Topic {
    fn from(s: String) -> Topic {
        Topic(Arc::from(s))
    }
}

impl From<&String> for Topic {
    fn from(s: &String) -> Topic {
        Topic(Arc::from(s.as_str()))
    }
}

impl From<Arc<str>> for Topic {
    fn from(s: Arc<str>) -> Topic {
        Topic(s)
    }
}

impl From<&Topic> for Topic {
    fn from(t: &Topic) -> Topic {
        t.clone()
    }
}

impl From<Topic> for Arc<str> {
    fn from(t: Topic) -> Arc<str> {
        t.0
    }
}

impl PartialEq<str> for Topic {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Topic {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_allocation_and_compare_as_text() {
        let t = Topic::new("orders");
        let u = Topic::from(&t);
        assert!(u.ptr_eq(&t.clone().into_arc()));
        assert_eq!(t, Topic::from(String::from("orders")));
        assert_eq!(t, "orders");
        assert_eq!(format!("{t} {t:?}"), "orders \"orders\"");
        let set: std::collections::HashSet<Topic> = [t.clone()].into();
        assert!(set.contains("orders"));
    }
}
