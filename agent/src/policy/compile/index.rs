//! The pods and namespaces arranged for the selectors' questions.

use std::collections::{BTreeMap, HashMap};

use super::super::model::{namespace_labels, Labels, NamespaceInfo, PodInfo};
use super::super::selector::Selector;

pub(super) struct Index<'a> {
    /// Pods selectors can see, per namespace.
    by_namespace: BTreeMap<&'a str, Vec<&'a PodInfo>>,
    /// All pods selectors can see.
    pub all: Vec<&'a PodInfo>,
    namespaces: HashMap<&'a str, &'a Labels>,
    pub node: &'a str,
}

impl<'a> Index<'a> {
    pub fn new(
        pods: impl IntoIterator<Item = &'a PodInfo>,
        namespaces: impl IntoIterator<Item = &'a NamespaceInfo>,
        node: &'a str,
    ) -> Self {
        let all: Vec<&PodInfo> = pods.into_iter().filter(|p| p.selectable()).collect();
        let mut by_namespace: BTreeMap<&str, Vec<&PodInfo>> = BTreeMap::new();
        for p in &all {
            by_namespace
                .entry(p.namespace.as_str())
                .or_default()
                .push(p);
        }
        Index {
            by_namespace,
            all,
            namespaces: namespaces
                .into_iter()
                .map(|n| (n.name.as_str(), &n.labels))
                .collect(),
            node,
        }
    }

    pub fn pods_in(&self, namespace: &str) -> &[&'a PodInfo] {
        self.by_namespace
            .get(namespace)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// This node's pods in `namespace` that `selector` selects.
    pub fn local_pods(&self, namespace: &str, selector: &Selector) -> Vec<&'a PodInfo> {
        self.pods_in(namespace)
            .iter()
            .filter(|p| p.node == self.node && selector.matches(&p.labels))
            .copied()
            .collect()
    }

    /// The namespaces holding pods whose labels (the name label included) `selector`
    /// matches; a namespace with no pods has nothing to select.
    pub fn namespaces_matching<'s>(
        &'s self,
        selector: &'s Selector,
    ) -> impl Iterator<Item = &'a str> + 's {
        self.by_namespace.keys().copied().filter(move |ns| {
            selector.is_everything()
                || selector.matches(&namespace_labels(ns, self.namespaces.get(ns).copied()))
        })
    }
}
