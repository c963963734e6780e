//! [`Resources`]: a name -> `Arc<Any>` map shared behind an `Arc`, so that
//! generated results clone in constant time and cached parts of them are
//! combined without copying resource bytes.

use std::collections::BTreeMap;
use std::collections::btree_map;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;

/// Resources of one type by name: a `BTreeMap<String, Arc<Any>>` behind an
/// `Arc`. Proxies of one snapshot share maps and resources where their
/// configuration is the same.
///
/// It dereferences to the map, so reads look like map reads; writes
/// (through `DerefMut` or [`Resources::insert`]) copy the map first if
/// another `Resources` shares it. Cloning is an `Arc` clone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources(Arc<BTreeMap<String, Arc<Any>>>);

impl Resources {
    /// An identity of the shared map: two `Resources` with the same id (both
    /// alive) are the same map, hence equal. Equal maps may have different ids.
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// Whether `self` and `other` share one map.
    pub fn shares(&self, other: &Resources) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Adds (or replaces) the resource `name`, returning the one it replaces.
    pub fn insert(&mut self, name: String, any: impl Into<Arc<Any>>) -> Option<Arc<Any>> {
        Arc::make_mut(&mut self.0).insert(name, any.into())
    }
}

impl Deref for Resources {
    type Target = BTreeMap<String, Arc<Any>>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Resources {
    fn deref_mut(&mut self) -> &mut Self::Target {
        Arc::make_mut(&mut self.0)
    }
}

impl From<BTreeMap<String, Arc<Any>>> for Resources {
    fn from(map: BTreeMap<String, Arc<Any>>) -> Self {
        Resources(Arc::new(map))
    }
}

impl FromIterator<(String, Arc<Any>)> for Resources {
    fn from_iter<I: IntoIterator<Item = (String, Arc<Any>)>>(iter: I) -> Self {
        Resources(Arc::new(iter.into_iter().collect()))
    }
}

impl<'a> IntoIterator for &'a Resources {
    type Item = (&'a String, &'a Arc<Any>);
    type IntoIter = btree_map::Iter<'a, String, Arc<Any>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
