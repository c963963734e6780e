//! [`Label`]: a metric label value that is cheap to copy.
//!
//! A request's label set has 25 values, most of them the same for every
//! request of a route (this workload, the destination service, `unknown`).
//! Owning them as `String`s cost 25 allocations per request; a `Label` is a
//! shared `Arc<str>`, so copying a precomputed set is 25 reference-count
//! increments, and [`Label::intern`] reuses one allocation per distinct
//! value seen on a thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, LazyLock};

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// A label value: an immutable shared string.
#[derive(Clone, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct Label(Arc<str>);

static EMPTY: LazyLock<Label> = LazyLock::new(|| Label(Arc::from("")));
static UNKNOWN: LazyLock<Label> = LazyLock::new(|| Label(Arc::from("unknown")));

/// Distinct values kept per thread by [`Label::intern`] before the cache
/// starts over (label values come from config and peers: bounded, but a
/// hostile peer must not grow it without limit).
const INTERN_CAPACITY: usize = 4096;

thread_local! {
    static INTERNED: RefCell<HashMap<Box<str>, Label, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
}

impl Label {
    /// Istio's value for a label nobody knows: `"unknown"` (shared).
    pub fn unknown() -> Self {
        UNKNOWN.clone()
    }

    /// `s`, or `"unknown"` when it is empty (Istio's convention), interned.
    pub fn or_unknown(s: &str) -> Self {
        if s.is_empty() {
            Self::unknown()
        } else {
            Self::intern(s)
        }
    }

    /// The same value as `s`, sharing one allocation with earlier calls on
    /// this thread (no allocation once a value has been seen).
    pub fn intern(s: &str) -> Self {
        match s {
            "" => return EMPTY.clone(),
            "unknown" => return Self::unknown(),
            _ => {}
        }
        INTERNED.with(|m| {
            let mut m = m.borrow_mut();
            if let Some(l) = m.get(s) {
                return l.clone();
            }
            if m.len() >= INTERN_CAPACITY {
                m.clear();
            }
            let l = Label(Arc::from(s));
            m.insert(s.into(), l.clone());
            l
        })
    }

    /// Whether `other` is this very value (one shared allocation), which
    /// implies equal; equal values may still be different allocations.
    pub fn same(&self, other: &Label) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Label {
    fn default() -> Self {
        EMPTY.clone()
    }
}

impl Deref for Label {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Label {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Label {
    fn from(s: &str) -> Self {
        Label(Arc::from(s))
    }
}

impl From<String> for Label {
    fn from(s: String) -> Self {
        Label(Arc::from(s))
    }
}

impl From<&String> for Label {
    fn from(s: &String) -> Self {
        Label(Arc::from(s.as_str()))
    }
}

impl PartialEq<str> for Label {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Label {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Label {
    fn eq(&self, other: &String) -> bool {
        &*self.0 == other.as_str()
    }
}

impl PartialEq<Label> for String {
    fn eq(&self, other: &Label) -> bool {
        self.as_str() == &*other.0
    }
}

impl PartialEq<Label> for &str {
    fn eq(&self, other: &Label) -> bool {
        *self == &*other.0
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_values_share_one_allocation() {
        let a = Label::intern("reviews.default.svc.cluster.local");
        let b = Label::intern(&String::from("reviews.default.svc.cluster.local"));
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, "reviews.default.svc.cluster.local");
        assert_eq!(Label::or_unknown(""), "unknown");
        assert_eq!(Label::default(), "");
    }

    #[test]
    fn intern_cache_is_bounded() {
        for i in 0..(INTERN_CAPACITY * 2 + 3) {
            let v = format!("v{i}");
            assert_eq!(Label::intern(&v), v.as_str());
        }
        INTERNED.with(|m| assert!(m.borrow().len() <= INTERN_CAPACITY));
    }
}
