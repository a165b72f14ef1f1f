//! The three watches the policy loop needs, as one stream of [`Input`]s: all Pods and
//! Namespaces as slim projections ([`super::objects`]) and all NetworkPolicies. Lists
//! are paged so a relist's transient memory stays bounded whatever the cluster size.

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;

use super::inputs::Input;
use super::objects::{SlimNamespace, SlimPod};

/// Objects per list page.
pub const PAGE_SIZE: u32 = 500;

pub fn watches(client: Client) -> impl Stream<Item = Result<Input, watcher::Error>> + Send {
    let config = || watcher::Config::default().page_size(PAGE_SIZE);
    let pods = watcher(Api::<SlimPod>::all(client.clone()), config())
        .default_backoff()
        .map_ok(Input::Pod);
    let namespaces = watcher(Api::<SlimNamespace>::all(client.clone()), config())
        .default_backoff()
        .map_ok(Input::Namespace);
    let policies = watcher(Api::<NetworkPolicy>::all(client), config())
        .default_backoff()
        .map_ok(Input::Policy);
    futures::stream::select_all([pods.boxed(), namespaces.boxed(), policies.boxed()])
}
