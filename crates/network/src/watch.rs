//! A minimal in-memory copy of watched objects, for the agent loops ([`crate::hostgw::run`],
//! [`crate::announce::run`]): a relist replaces the whole set at once, so objects deleted while the watch was
//! down disappear too.

use std::collections::BTreeMap;

use kube::Resource;
use kube::runtime::watcher::Event;

/// Objects by `namespace/name`.
#[derive(Debug)]
pub(crate) struct Cache<K> {
    pub(crate) objects: BTreeMap<String, K>,
    listing: Option<BTreeMap<String, K>>,
    /// Whether a complete list has been seen (before that the set may be partial: do not act on it).
    pub(crate) listed: bool,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Cache {
            objects: BTreeMap::new(),
            listing: None,
            listed: false,
        }
    }
}

impl<K: Resource> Cache<K> {
    pub(crate) fn apply(&mut self, event: Event<K>) {
        let key = |o: &K| {
            let meta = o.meta();
            format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or(""),
                meta.name.as_deref().unwrap_or("")
            )
        };
        match event {
            Event::Apply(o) => {
                self.objects.insert(key(&o), o);
            }
            Event::Delete(o) => {
                self.objects.remove(&key(&o));
            }
            Event::Init => self.listing = Some(BTreeMap::new()),
            Event::InitApply(o) => {
                self.listing.get_or_insert_with(BTreeMap::new).insert(key(&o), o);
            }
            Event::InitDone => {
                self.objects = self.listing.take().unwrap_or_default();
                self.listed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;

    fn node(name: &str) -> Node {
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_relist_forgets_objects_deleted_while_not_watching() {
        let mut cache = Cache::default();
        cache.apply(Event::Apply(node("a")));
        cache.apply(Event::Apply(node("b")));
        assert!(
            !cache.listed,
            "events before the first complete list are not a full picture"
        );
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(node("a")));
        assert_eq!(
            cache.objects.len(),
            2,
            "the old set stays until the relist is complete"
        );
        cache.apply(Event::InitDone);
        assert!(cache.listed);
        assert_eq!(cache.objects.keys().collect::<Vec<_>>(), vec!["/a"]);
        cache.apply(Event::Delete(node("a")));
        assert!(cache.objects.is_empty());
    }
}
