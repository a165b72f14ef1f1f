//! What the policy watches have seen: the cluster's pods, namespaces and policies, kept
//! as the compiler's slim inputs and updated event by event (pure: the watches feed it
//! [`watcher::Event`]s). A (re)list is gathered aside and swapped in whole at its end,
//! so the compiler never sees half a list.

use std::collections::HashMap;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher::Event;

use super::model::{NamespaceInfo, PodInfo};
use super::objects::{namespace_info, pod_info, SlimNamespace, SlimPod};
use super::rules::RuleModel;

/// One kind of object, by `namespace/name`.
#[derive(Debug)]
pub struct Store<V> {
    items: HashMap<String, V>,
    relist: Option<HashMap<String, V>>,
    synced: bool,
}

impl<V> Default for Store<V> {
    fn default() -> Self {
        Store {
            items: HashMap::new(),
            relist: None,
            synced: false,
        }
    }
}

impl<V: PartialEq> Store<V> {
    /// Applies one watch event, projected by `project` (`None`: the object is unusable
    /// and treated as absent). Returns whether what the compiler sees changed.
    pub fn apply<K>(
        &mut self,
        event: Event<K>,
        project: impl Fn(&K) -> Option<(String, V)>,
    ) -> bool {
        match event {
            Event::Apply(obj) => match project(&obj) {
                Some((key, value)) => match self.items.get(&key) {
                    Some(old) if *old == value => false,
                    _ => {
                        self.items.insert(key, value);
                        true
                    }
                },
                None => false,
            },
            Event::Delete(obj) => match project(&obj) {
                Some((key, _)) => self.items.remove(&key).is_some(),
                None => false,
            },
            Event::Init => {
                self.relist = Some(HashMap::new());
                false
            }
            Event::InitApply(obj) => {
                if let Some((key, value)) = project(&obj) {
                    self.relist
                        .get_or_insert_with(HashMap::new)
                        .insert(key, value);
                }
                false
            }
            Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                let changed = !self.synced || fresh != self.items;
                self.items = fresh;
                self.synced = true;
                changed
            }
        }
    }

    /// Whether a first list has completed.
    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.items.values()
    }
}

fn key(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// A policy as the compiler needs it: identity and spec; the rest of the metadata
/// (resourceVersion, managedFields) would make every write look like a change.
pub fn slim_policy(p: &NetworkPolicy) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: p.metadata.name.clone(),
            namespace: p.metadata.namespace.clone(),
            ..ObjectMeta::default()
        },
        spec: p.spec.clone(),
    }
}

/// The three stores together.
#[derive(Debug, Default)]
pub struct Inputs {
    pub pods: Store<PodInfo>,
    pub namespaces: Store<NamespaceInfo>,
    pub policies: Store<NetworkPolicy>,
}

/// One event from one of the three watches.
#[derive(Debug)]
pub enum Input {
    Pod(Event<SlimPod>),
    Namespace(Event<SlimNamespace>),
    Policy(Event<NetworkPolicy>),
}

impl Inputs {
    /// Applies one event; returns whether the compiler's inputs changed.
    pub fn apply(&mut self, input: Input) -> bool {
        match input {
            Input::Pod(e) => self
                .pods
                .apply(e, |p| pod_info(p).map(|i| (key(&p.metadata), i))),
            Input::Namespace(e) => self
                .namespaces
                .apply(e, |n| namespace_info(n).map(|i| (i.name.clone(), i))),
            Input::Policy(e) => self
                .policies
                .apply(e, |p| Some((key(&p.metadata), slim_policy(p)))),
        }
    }

    /// Whether all three watches have listed once: only then is a ruleset complete.
    pub fn synced(&self) -> bool {
        self.pods.synced() && self.namespaces.synced() && self.policies.synced()
    }

    pub fn compile(&self, node: &str) -> RuleModel {
        super::compile(
            self.policies.values(),
            self.pods.values(),
            self.namespaces.values(),
            node,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, app: &str) -> SlimPod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": app}},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Running", "podIPs": [{"ip": ip}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_relist_is_swapped_in_whole_at_its_end() {
        let mut inputs = Inputs::default();
        assert!(!inputs.apply(Input::Pod(Event::Init)));
        assert!(!inputs.apply(Input::Pod(Event::InitApply(pod("a", "10.0.0.1", "x")))));
        assert!(!inputs.pods.synced() && inputs.pods.is_empty());
        assert!(inputs.apply(Input::Pod(Event::InitDone)));
        assert_eq!(inputs.pods.len(), 1);
        assert!(!inputs.synced(), "namespaces and policies not listed yet");

        // A relist that drops "a" and brings "b": "a" stays visible until the end.
        inputs.apply(Input::Pod(Event::Init));
        inputs.apply(Input::Pod(Event::InitApply(pod("b", "10.0.0.2", "x"))));
        assert_eq!(inputs.pods.values().next().unwrap().name, "a");
        assert!(inputs.apply(Input::Pod(Event::InitDone)));
        assert_eq!(inputs.pods.values().next().unwrap().name, "b");

        // The same list again changes nothing.
        inputs.apply(Input::Pod(Event::Init));
        inputs.apply(Input::Pod(Event::InitApply(pod("b", "10.0.0.2", "x"))));
        assert!(!inputs.apply(Input::Pod(Event::InitDone)));
    }

    #[test]
    fn only_changes_the_compiler_sees_count() {
        let mut inputs = Inputs::default();
        assert!(inputs.apply(Input::Pod(Event::Apply(pod("a", "10.0.0.1", "x")))));
        // A status heartbeat that changes nothing projected.
        assert!(!inputs.apply(Input::Pod(Event::Apply(pod("a", "10.0.0.1", "x")))));
        assert!(inputs.apply(Input::Pod(Event::Apply(pod("a", "10.0.0.1", "y")))));
        assert!(inputs.apply(Input::Pod(Event::Delete(pod("a", "10.0.0.1", "y")))));
        assert!(!inputs.apply(Input::Pod(Event::Delete(pod("a", "10.0.0.1", "y")))));

        let mut p: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "resourceVersion": "1"},
            "spec": {"podSelector": {}}
        }))
        .unwrap();
        assert!(inputs.apply(Input::Policy(Event::Apply(p.clone()))));
        p.metadata.resource_version = Some("2".into());
        assert!(!inputs.apply(Input::Policy(Event::Apply(p))));
    }

    #[test]
    fn all_three_lists_make_it_synced() {
        let mut inputs = Inputs::default();
        inputs.apply(Input::Pod(Event::InitDone));
        inputs.apply(Input::Namespace(Event::InitDone));
        assert!(!inputs.synced());
        inputs.apply(Input::Policy(Event::InitDone));
        assert!(inputs.synced());
        assert!(inputs.compile("n1").policies.is_empty());
    }
}
