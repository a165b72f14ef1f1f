//! `weft-e2e up`: control plane, nodes registered NotReady, then weft installed
//! (`kubectl apply -k`, or `helm install` with `--helm`) and the nodes Ready. A failure
//! leaves everything in place for inspection; `down` cleans up.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};

use super::runtime::Containerd;
use super::{controlplane, images, node, pki, process, Layout, NodeSpec};
use crate::harness::{bin, cache_dir, client_from};
use crate::topo::run;

#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: u8,
    /// The weft image (docker reference); built by scripts/build-image.sh if missing.
    pub image: String,
    /// Rebuild the weft image from the current sources even if docker has it.
    pub build_image: bool,
    /// How to install weft; `None` stops once the nodes are registered (NotReady).
    pub weft: Option<Install>,
    pub timeout: Duration,
}

/// How `up` installs weft, with the image set to [`Options::image`].
#[derive(Clone, Debug)]
pub enum Install {
    /// `kubectl apply -k` of an overlay on this kustomize base (`manifests/`).
    Kustomize(PathBuf),
    /// `helm install` of this chart (`charts/weft`) as release [`HELM_RELEASE`] in
    /// [`HELM_NAMESPACE`].
    Helm(PathBuf),
}

/// The Helm release of `up --helm`.
pub const HELM_RELEASE: &str = "weft";
/// Where that release is recorded; the chart itself creates weft-system for its objects,
/// so the release cannot live there.
pub const HELM_NAMESPACE: &str = "kube-system";

/// The helm binary (scripts/build-helm.sh), or an error saying how to build it.
pub fn helm_bin() -> Result<PathBuf> {
    let path = cache_dir().join("bin/helm");
    if !path.is_file() {
        bail!(
            "{} is missing: run scripts/build-helm.sh to build Helm",
            path.display()
        );
    }
    Ok(path)
}

/// `helm` for the local cluster: its admin kubeconfig, and Helm's cache, config and
/// data under the cluster's state directory rather than in $HOME.
pub fn helm_command(layout: &Layout) -> Result<Command> {
    let mut cmd = Command::new(helm_bin()?);
    let home = layout.dir.join("helm");
    cmd.arg(format!(
        "--kubeconfig={}",
        layout.admin_kubeconfig().display()
    ))
    .env("HELM_CACHE_HOME", home.join("cache"))
    .env("HELM_CONFIG_HOME", home.join("config"))
    .env("HELM_DATA_HOME", home.join("data"));
    Ok(cmd)
}

/// Host sysctls the kubelet rewrites at start (it does so on any host); `down` puts
/// back what was there before.
const KUBELET_SYSCTLS: [&str; 6] = [
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
];

pub fn run_up(opts: &Options) -> Result<()> {
    let state = super::state_dir();
    let existed = state.exists();
    let r = up(opts);
    if r.is_err() && !existed && state.exists() {
        return r.with_context(|| {
            format!(
                "weft-e2e up failed; logs are in {}; `weft-e2e down` removes what was made",
                state.join("logs").display()
            )
        });
    }
    r
}

fn up(opts: &Options) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("weft-e2e up needs root (network and mount namespaces, cgroups)");
    }
    let started = Instant::now();
    let layout = Layout::new(super::state_dir());
    if layout.dir.exists() {
        bail!(
            "{} exists: a cluster is up or was not cleaned; run `weft-e2e down` first",
            layout.dir.display()
        );
    }
    for b in super::KUBERNETES_BINS {
        bin(b)?;
    }
    if let Some(Install::Helm(_)) = &opts.weft {
        helm_bin()?;
    }
    let runtime = Containerd::find()?;
    std::fs::create_dir_all(&layout.dir)?;
    // The control-plane node first: the host, on the pod network like the workers.
    let nodes: Vec<NodeSpec> = std::iter::once(NodeSpec::control_plane())
        .chain((1..=opts.nodes).map(NodeSpec::new))
        .collect();
    save_sysctls(&layout)?;

    // Images build on other threads while the control plane and nodes come up.
    let img_layout = layout.clone();
    let node_images = std::thread::spawn(move || images::build_node_images(&img_layout));
    let weft_image = opts.weft.as_ref().map(|_| {
        let (l, image, build_image) = (layout.clone(), opts.image.clone(), opts.build_image);
        std::thread::spawn(move || images::weft_image_tar(&l, &image, build_image))
    });

    pki::make(&layout)?;
    let ids = pki::identities(&nodes);
    std::fs::write(layout.dir.join("tokens.csv"), pki::token_file(&ids))?;
    let ca = layout.pki().join("ca.crt");
    for id in &ids {
        let path = if id.component == "admin" {
            layout.admin_kubeconfig()
        } else {
            layout.kubeconfig(&id.component)
        };
        pki::write_kubeconfig(&path, &super::api_server_url(), &ca, &id.user, &id.token)?;
    }

    node::create_underlay()?;
    node::prepare_ns_dir()?;
    let mut created = Vec::new();
    for n in &nodes {
        node::create_netns(n)?;
        let r = node::create_mntns(&layout, n, &mut created);
        // Recorded even on failure, so `down` removes what was made.
        let text: String = created
            .iter()
            .map(|p| format!("{}\n", p.display()))
            .collect();
        std::fs::write(layout.created_dirs_file(), text)?;
        r?;
        node::create_cgroups(n)?;
        node::write_config(&layout, n, &runtime)?;
        node::start_containerd(&layout, n, &runtime)?;
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(controlplane::start_api(&layout))?;
    controlplane::start_controllers(&layout)?;
    tracing::info!(
        secs = started.elapsed().as_secs_f64(),
        "control plane ready"
    );

    for n in &nodes {
        node::wait_containerd(&layout, n, &runtime, Duration::from_secs(30))?;
    }
    let mut tars = node_images.join().expect("image thread panicked")?;
    if let Some(h) = weft_image {
        tars.push(h.join().expect("image thread panicked")?);
    }
    images::import_all(&layout, &nodes, &runtime, &tars)?;
    tracing::info!(secs = started.elapsed().as_secs_f64(), "images imported");

    for n in &nodes {
        node::start_kubelet(&layout, n)?;
        node::start_kube_proxy(&layout, n)?;
    }
    rt.block_on(wait_nodes(&layout, &nodes, false, opts.timeout))?;
    // A kubelet may not set node-role labels on its own Node; kubeadm sets this one too.
    rt.block_on(label_control_plane(&layout))?;
    tracing::info!(
        secs = started.elapsed().as_secs_f64(),
        "nodes registered (NotReady until weft runs)"
    );

    if let Some(install) = &opts.weft {
        match install {
            Install::Kustomize(manifests) => apply(&layout, manifests, &opts.image)?,
            Install::Helm(chart) => helm_install(&layout, chart, &opts.image)?,
        }
        rt.block_on(wait_nodes(&layout, &nodes, true, opts.timeout))?;
        tracing::info!(secs = started.elapsed().as_secs_f64(), "nodes Ready");
        // Cluster DNS, as kubeadm's addon; it starts once the pod network is there.
        run(Command::new(bin("kubectl")?)
            .arg(format!(
                "--kubeconfig={}",
                layout.admin_kubeconfig().display()
            ))
            .args(["apply", "-f"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/addons/coredns.yaml")))
        .context("kubectl apply (CoreDNS)")?;
    }
    println!(
        "cluster up in {:.1} s ({} nodes: the control plane and {} workers)\n  export KUBECONFIG={}\n  kubectl get nodes -o wide\nlogs: {}\nremove with: weft-e2e down",
        started.elapsed().as_secs_f64(),
        nodes.len(),
        nodes.len() - 1,
        layout.admin_kubeconfig().display(),
        layout.logs().display()
    );
    Ok(())
}

fn save_sysctls(layout: &Layout) -> Result<()> {
    let out = run(Command::new("sysctl").args(KUBELET_SYSCTLS))?;
    std::fs::write(layout.sysctl_file(), out.stdout)?;
    Ok(())
}

/// `kubectl apply -k` of an overlay that sets the weft image.
fn apply(layout: &Layout, manifests: &std::path::Path, image: &str) -> Result<()> {
    let base = manifests
        .canonicalize()
        .with_context(|| format!("manifests at {}", manifests.display()))?;
    let (name, tag) = image
        .rsplit_once(':')
        .context("image needs a tag (name:tag)")?;
    let overlay = layout.dir.join("overlay");
    std::fs::create_dir_all(&overlay)?;
    // kustomize takes only relative paths to a base.
    let up = "../".repeat(overlay.components().count() - 1);
    let base_rel = format!("{up}{}", base.display().to_string().trim_start_matches('/'));
    let kustomization = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base_rel],
        "images": [{"name": "weft.dev/weft", "newName": name, "newTag": tag}],
    });
    std::fs::write(
        overlay.join("kustomization.yaml"),
        serde_json::to_vec_pretty(&kustomization)?,
    )?;
    run(Command::new(bin("kubectl")?)
        .arg(format!(
            "--kubeconfig={}",
            layout.admin_kubeconfig().display()
        ))
        .arg("apply")
        .arg("-k")
        .arg(&overlay))
    .context("kubectl apply -k (weft)")?;
    Ok(())
}

/// `helm install` of the chart with the image values set, as `apply` sets the image in
/// its overlay; the nodes turning Ready is the wait.
fn helm_install(layout: &Layout, chart: &std::path::Path, image: &str) -> Result<()> {
    let chart = chart
        .canonicalize()
        .with_context(|| format!("chart at {}", chart.display()))?;
    let (name, tag) = image
        .rsplit_once(':')
        .context("image needs a tag (name:tag)")?;
    run(helm_command(layout)?
        .args(["install", HELM_RELEASE])
        .arg(&chart)
        .args(["--namespace", HELM_NAMESPACE])
        .arg(format!("--set-string=image.repository={name}"))
        .arg(format!("--set-string=image.tag={tag}")))
    .context("helm install (weft)")?;
    Ok(())
}

async fn label_control_plane(layout: &Layout) -> Result<()> {
    let client = client_from(&layout.admin_kubeconfig()).await?;
    let api: Api<Node> = Api::all(client);
    let patch = serde_json::json!({"metadata": {"labels": {super::CONTROL_PLANE_ROLE: ""}}});
    api.patch(
        super::CONTROL_PLANE,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .with_context(|| format!("label node {}", super::CONTROL_PLANE))?;
    Ok(())
}

fn is_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until every node is registered (and Ready when `ready`), checking that the
/// node daemons still run.
async fn wait_nodes(
    layout: &Layout,
    nodes: &[NodeSpec],
    ready: bool,
    timeout: Duration,
) -> Result<()> {
    let client = client_from(&layout.admin_kubeconfig()).await?;
    let api: Api<Node> = Api::all(client);
    let deadline = Instant::now() + timeout;
    loop {
        for n in nodes {
            for d in ["containerd", "kubelet", "kube-proxy"] {
                process::check_alive(layout, &format!("{d}-{}", n.name))?;
            }
        }
        let list = api.list(&ListParams::default()).await?;
        let missing: Vec<&str> = nodes
            .iter()
            .filter(|n| {
                !list
                    .items
                    .iter()
                    .any(|o| o.metadata.name.as_deref() == Some(&n.name) && (!ready || is_ready(o)))
            })
            .map(|n| n.name.as_str())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let what = if ready { "Ready" } else { "registered" };
            bail!("nodes not {what} after {timeout:?}: {}", missing.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
