//! Scrapes the controller's `/metrics` over HTTP after recording allocations, a conflict,
//! an error, refused pod CIDRs, pool sizes and the lease, and reads the answer with the
//! OpenMetrics parser the agent's scrape test uses: content type, every family with
//! its type and HELP, the exposed series names and labels (unchanged by the move to
//! `prometheus-client`), the values, and `# EOF` at the end.

#[path = "../../agent/tests/openmetrics/mod.rs"]
mod openmetrics;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use weft_controller::allocator::{Family, PoolStats};
use weft_controller::metrics::Metrics;
use weft_controller::rejected::Reason;

use openmetrics::{family, parse, series_shapes};

#[tokio::test]
async fn metrics_endpoint_serves_openmetrics_with_every_family_and_the_recorded_values() {
    let metrics = Arc::new(Metrics::default());
    let addr = weft_controller::http::spawn("127.0.0.1:0".parse().unwrap(), metrics.clone())
        .await
        .unwrap();

    metrics.set_pools(vec![
        (
            Family::V4,
            PoolStats {
                total: 256,
                used: 3,
            },
        ),
        (
            Family::V6,
            PoolStats {
                total: 1 << 64,
                used: 1,
            },
        ),
    ]);
    Metrics::inc(&metrics.allocations);
    Metrics::inc(&metrics.allocations);
    Metrics::inc(&metrics.conflicts);
    Metrics::inc(&metrics.errors);
    metrics.set_rejected(vec![(Reason::Overlap, 2), (Reason::Unparsable, 1)]);
    metrics.leader.store(true, Ordering::Relaxed);

    let (status, content_type, body) = openmetrics::get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    let families = parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));

    let kinds: Vec<(&str, &str)> = families
        .iter()
        .map(|f| (f.name.as_str(), f.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("weft_controller_subnets", "gauge"),
            ("weft_controller_rejected_pod_cidrs", "gauge"),
            ("weft_controller_allocations", "counter"),
            ("weft_controller_conflicts", "counter"),
            ("weft_controller_errors", "counter"),
            ("weft_controller_leader", "gauge"),
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

    // The series as the hand-written exposition named them.
    let shapes: BTreeSet<String> = [
        "weft_controller_subnets{family,state}",
        "weft_controller_rejected_pod_cidrs{reason}",
        "weft_controller_allocations_total{}",
        "weft_controller_conflicts_total{}",
        "weft_controller_errors_total{}",
        "weft_controller_leader{}",
    ]
    .map(String::from)
    .into();
    assert_eq!(series_shapes(&families), shapes);

    let subnets = family(&families, "weft_controller_subnets");
    let subnet = |family, state| {
        subnets.value(
            "weft_controller_subnets",
            &[("family", family), ("state", state)],
        )
    };
    assert_eq!(
        (
            subnet("ipv4", "total"),
            subnet("ipv4", "used"),
            subnet("ipv4", "free")
        ),
        (256.0, 3.0, 253.0)
    );
    assert_eq!(subnet("ipv6", "total"), 2f64.powi(64));
    assert_eq!(subnets.samples.len(), 6);

    let rejected = family(&families, "weft_controller_rejected_pod_cidrs");
    assert_eq!(
        rejected.label_values("reason"),
        Reason::ALL.iter().map(|r| r.label().to_string()).collect()
    );
    let refused =
        |reason| rejected.value("weft_controller_rejected_pod_cidrs", &[("reason", reason)]);
    assert_eq!(
        (
            refused("overlap"),
            refused("unparsable"),
            refused("wrong_size"),
            refused("outside_cluster")
        ),
        (2.0, 1.0, 0.0, 0.0)
    );

    let counter = |name: &str| family(&families, name).value(&format!("{name}_total"), &[]);
    assert_eq!(counter("weft_controller_allocations"), 2.0);
    assert_eq!(counter("weft_controller_conflicts"), 1.0);
    assert_eq!(counter("weft_controller_errors"), 1.0);
    let leader = family(&families, "weft_controller_leader");
    assert_eq!(leader.value("weft_controller_leader", &[]), 1.0);

    // A standby replica: the flag is read at every scrape.
    metrics.leader.store(false, Ordering::Relaxed);
    let (_, _, body) = openmetrics::get(addr, "/metrics").await;
    let families = parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    let leader = family(&families, "weft_controller_leader");
    assert_eq!(leader.value("weft_controller_leader", &[]), 0.0);
}
