//! Scrapes the agent's `/metrics` over HTTP after recording syncs, errors, rejections
//! and VXLAN drops, and reads the answer with an OpenMetrics parser: content type,
//! every family with its type and HELP, the exposed series names and labels (those
//! dashboards and alerts use, unchanged by the move to `prometheus-client`), the
//! values, and `# EOF` at the end.

mod openmetrics;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use weft_agent::http::{serve, HttpState};
use weft_agent::metrics::{ErrorKind, Metrics, SyncCounts};
use weft_agent::peers::Reason;

use openmetrics::{family, parse, series_shapes};

#[tokio::test]
async fn metrics_endpoint_serves_openmetrics_with_every_family_and_the_recorded_values() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let state = Arc::new(HttpState {
        metrics: metrics.clone(),
        subnet_file: dir.path().join("subnet.env"),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve(listener, state));

    metrics.record_sync(
        Duration::from_millis(3),
        Ok(SyncCounts {
            peers: 2,
            added: 4,
            removed: 1,
            updated: 0,
        }),
    );
    metrics.record_sync(Duration::from_millis(700), Err(()));
    metrics.error(ErrorKind::Publish);
    metrics.set_rejected(
        [
            Reason::VniMismatch,
            Reason::DuplicatePodCidr,
            Reason::VniMismatch,
        ]
        .into_iter(),
    );
    metrics.set_vxlan_drops(5, 11);
    metrics.set_ready(true);

    let (status, content_type, body) = openmetrics::get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    let families = parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));

    // Every family, its type and its HELP, in the exposition's order.
    let kinds: Vec<(&str, &str)> = families
        .iter()
        .map(|f| (f.name.as_str(), f.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("weft_agent_build", "info"),
            ("weft_agent_ready", "gauge"),
            ("weft_agent_remote_nodes", "gauge"),
            ("weft_agent_reconcile", "counter"),
            ("weft_agent_reconcile_duration_seconds", "histogram"),
            ("weft_agent_kernel_operations", "counter"),
            ("weft_agent_errors", "counter"),
            ("weft_agent_rejected_peers", "gauge"),
            ("weft_agent_vxlan_dropped_packets", "counter"),
            ("weft_agent_policy_policies", "gauge"),
            ("weft_agent_policy_rules", "gauge"),
            ("weft_agent_policy_set_elements", "gauge"),
            ("weft_agent_policy_problems", "gauge"),
            ("weft_agent_policy_syncs", "counter"),
            ("weft_agent_policy_last_apply_seconds", "gauge"),
            ("weft_agent_policy_dropped_packets", "counter"),
        ]
    );
    for f in &families {
        let help = f.help.as_deref().unwrap_or_default();
        assert!(
            help.len() > 10 && help.ends_with('.'),
            "{}: {help:?}",
            f.name
        );
    }
    assert_eq!(
        family(&families, "weft_agent_reconcile_duration_seconds")
            .unit
            .as_deref(),
        Some("seconds")
    );

    // The series as the hand-written exposition named them.
    let shapes: BTreeSet<String> = [
        "weft_agent_build_info{version}",
        "weft_agent_ready{}",
        "weft_agent_remote_nodes{}",
        "weft_agent_reconcile_total{result}",
        "weft_agent_reconcile_duration_seconds_bucket{le}",
        "weft_agent_reconcile_duration_seconds_sum{}",
        "weft_agent_reconcile_duration_seconds_count{}",
        "weft_agent_kernel_operations_total{op}",
        "weft_agent_errors_total{kind}",
        "weft_agent_rejected_peers{reason}",
        "weft_agent_vxlan_dropped_packets_total{source}",
        "weft_agent_policy_policies{}",
        "weft_agent_policy_rules{}",
        "weft_agent_policy_set_elements{}",
        "weft_agent_policy_problems{}",
        "weft_agent_policy_syncs_total{result}",
        "weft_agent_policy_last_apply_seconds{}",
        "weft_agent_policy_dropped_packets_total{direction}",
    ]
    .map(String::from)
    .into();
    assert_eq!(series_shapes(&families), shapes);

    // Every label value is there from the start, recorded or not.
    let labels = |name: &str, label: &str| family(&families, name).label_values(label);
    let set = |values: &[&str]| {
        values
            .iter()
            .map(|v| v.to_string())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        labels("weft_agent_reconcile", "result"),
        set(&["ok", "error"])
    );
    assert_eq!(
        labels("weft_agent_kernel_operations", "op"),
        set(&["add", "remove", "update"])
    );
    assert_eq!(
        labels("weft_agent_errors", "kind"),
        set(&["watch", "sync", "publish", "condition", "policy"])
    );
    assert_eq!(
        labels("weft_agent_policy_dropped_packets", "direction"),
        set(&["ingress", "egress"])
    );
    assert_eq!(
        labels("weft_agent_rejected_peers", "reason"),
        Reason::ALL.iter().map(|r| r.as_str().to_string()).collect()
    );
    assert_eq!(
        labels("weft_agent_vxlan_dropped_packets", "source"),
        set(&["foreign", "pod"])
    );

    // The values recorded above.
    let value =
        |f: &str, sample: &str, labels: &[(&str, &str)]| family(&families, f).value(sample, labels);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(
            "weft_agent_build",
            "weft_agent_build_info",
            &[("version", version)]
        ),
        1.0
    );
    assert_eq!(value("weft_agent_ready", "weft_agent_ready", &[]), 1.0);
    assert_eq!(
        value("weft_agent_remote_nodes", "weft_agent_remote_nodes", &[]),
        2.0
    );
    let reconciles = |result| {
        value(
            "weft_agent_reconcile",
            "weft_agent_reconcile_total",
            &[("result", result)],
        )
    };
    assert_eq!((reconciles("ok"), reconciles("error")), (1.0, 1.0));
    let ops = |op| {
        value(
            "weft_agent_kernel_operations",
            "weft_agent_kernel_operations_total",
            &[("op", op)],
        )
    };
    assert_eq!((ops("add"), ops("remove"), ops("update")), (4.0, 1.0, 0.0));
    let errors = |kind| {
        value(
            "weft_agent_errors",
            "weft_agent_errors_total",
            &[("kind", kind)],
        )
    };
    assert_eq!(
        (errors("sync"), errors("publish"), errors("watch")),
        (1.0, 1.0, 0.0)
    );
    let rejected = |reason| {
        value(
            "weft_agent_rejected_peers",
            "weft_agent_rejected_peers",
            &[("reason", reason)],
        )
    };
    assert_eq!(rejected("vni_mismatch"), 2.0);
    assert_eq!(rejected("duplicate_pod_cidr"), 1.0);
    assert_eq!(rejected("malformed"), 0.0);
    let drops = |source| {
        value(
            "weft_agent_vxlan_dropped_packets",
            "weft_agent_vxlan_dropped_packets_total",
            &[("source", source)],
        )
    };
    assert_eq!((drops("foreign"), drops("pod")), (5.0, 11.0));

    // The histogram: 3 ms and 700 ms, in the buckets the agent has always had.
    let h = family(&families, "weft_agent_reconcile_duration_seconds");
    let bucket = |le| {
        h.value(
            "weft_agent_reconcile_duration_seconds_bucket",
            &[("le", le)],
        )
    };
    assert_eq!(bucket("0.001"), 0.0);
    assert_eq!(bucket("0.005"), 1.0);
    assert_eq!(bucket("0.5"), 1.0);
    assert_eq!(bucket("1.0"), 2.0);
    assert_eq!(bucket("+Inf"), 2.0);
    let bounds: Vec<String> = h
        .samples
        .iter()
        .filter_map(|s| s.labels.get("le").cloned())
        .collect();
    assert_eq!(
        bounds.len(),
        weft_agent::metrics::DURATION_BUCKETS.len() + 1
    );
    assert_eq!(
        h.value("weft_agent_reconcile_duration_seconds_count", &[]),
        2.0
    );
    let sum = h.value("weft_agent_reconcile_duration_seconds_sum", &[]);
    assert!((sum - 0.703).abs() < 1e-9, "{sum}");

    server.abort();
}
