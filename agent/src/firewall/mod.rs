//! weft's nftables table, `inet weft` ([`render`] says what is in it), and the VXLAN
//! source filter's sets ([`vxlan`]). Every change is one `nft -j -f -` transaction that
//! touches no other table.

pub mod render;
pub mod vxlan;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::datapath::Error;
pub use render::{TableSpec, FAMILY, KUBE_PROXY_MASQ_MARK, TABLE};

/// Runs `nft` with `args` and `input` on its stdin, in the calling thread's netns; the
/// error names `op` and carries nft's own message.
pub(crate) fn run_nft(args: &[&str], input: Option<&[u8]>, op: &str) -> Result<Vec<u8>, Error> {
    let fail = |reason: String| Error::Firewall {
        op: op.into(),
        reason,
    };
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run nft: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    if let Some(bytes) = input {
        stdin
            .write_all(bytes)
            .map_err(|e| fail(format!("writing to nft: {e}")))?;
    }
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for nft: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "nft exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

fn run_doc(doc: &Value, op: &str) -> Result<(), Error> {
    run_nft(&["-j", "-f", "-"], Some(doc.to_string().as_bytes()), op).map(|_| ())
}

/// Brings the `inet weft` table to `spec` in the calling thread's network namespace,
/// keeping the VXLAN sets' elements; rebuilt from nothing when that fails (a chain
/// changed by hand). Returns whether it had to rebuild (the sets are then empty).
pub fn apply(spec: &TableSpec) -> Result<bool, Error> {
    match run_doc(&render::render(spec), "update table inet weft") {
        Ok(()) => Ok(false),
        Err(e) => {
            tracing::warn!(error = %e, "updating the nftables table in place failed; rebuilding it");
            run_doc(&render::render_fresh(spec), "rebuild table inet weft")?;
            Ok(true)
        }
    }
}

/// Removes the `inet weft` table; no table is success.
pub fn remove() -> Result<(), Error> {
    run_doc(&render::render_remove(), "delete table inet weft")
}

/// How often the full set contents are rewritten even when nothing changed, to repair
/// hand edits (nothing notifies the agent of those).
const FULL_REFRESH: Duration = Duration::from_secs(60);
/// How often the drop counters are read at most.
const COUNTER_PERIOD: Duration = Duration::from_secs(5);

/// The VXLAN source filter's state: what the sets hold since the last update.
#[derive(Debug, Default)]
pub struct PeerFilter {
    state: Mutex<FilterState>,
}

#[derive(Debug, Default)]
struct FilterState {
    applied: Option<BTreeSet<IpAddr>>,
    full_at: Option<Instant>,
    counters_at: Option<Instant>,
}

/// Packets the filter dropped, from the table's named counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// VXLAN from addresses that are no peer's.
    pub foreign: u64,
    /// VXLAN sent by pods.
    pub from_pods: u64,
}

impl PeerFilter {
    /// Forgets what the sets hold: the next update replaces them whole.
    pub fn reset(&self) {
        self.state.lock().expect("filter lock").applied = None;
    }

    /// Makes the sets hold exactly `desired`. Returns how many addresses were added and
    /// removed (a full rewrite counts as all added).
    pub fn update(&self, desired: BTreeSet<IpAddr>) -> Result<(usize, usize), Error> {
        let mut st = self.state.lock().expect("filter lock");
        if st.full_at.is_none_or(|t| t.elapsed() >= FULL_REFRESH) {
            st.applied = None;
        }
        let Some(doc) = vxlan::update(st.applied.as_ref(), &desired) else {
            return Ok((0, 0));
        };
        let counts = match &st.applied {
            None => (desired.len(), 0),
            Some(old) => (
                desired.difference(old).count(),
                old.difference(&desired).count(),
            ),
        };
        let full = st.applied.is_none();
        let result = run_doc(&doc, "update the VXLAN peer sets").or_else(|e| {
            if full {
                return Err(e);
            }
            // Someone changed the sets by hand: rewrite them whole.
            run_doc(
                &vxlan::update(None, &desired).expect("a full update is never empty"),
                "rewrite the VXLAN peer sets",
            )
        });
        match result {
            Ok(()) => {
                if full {
                    st.full_at = Some(Instant::now());
                }
                st.applied = Some(desired);
                Ok(counts)
            }
            Err(e) => {
                st.applied = None;
                Err(e)
            }
        }
    }

    /// The drop counters, read at most every few seconds (`None` between reads).
    pub fn drops_if_due(&self) -> Option<Result<Drops, Error>> {
        let mut st = self.state.lock().expect("filter lock");
        if st.counters_at.is_some_and(|t| t.elapsed() < COUNTER_PERIOD) {
            return None;
        }
        st.counters_at = Some(Instant::now());
        drop(st);
        Some(read_drops())
    }
}

/// Reads the filter's named counters.
pub fn read_drops() -> Result<Drops, Error> {
    let mut drops = Drops::default();
    for c in list_counters(FAMILY, TABLE)? {
        match c.name.as_str() {
            render::COUNTER_FOREIGN => drops.foreign = c.packets,
            render::COUNTER_FROM_PODS => drops.from_pods = c.packets,
            _ => {}
        }
    }
    Ok(drops)
}

/// A named nftables counter's values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedCounter {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
}

/// The named counters of a table (an error when the table is missing).
pub(crate) fn list_counters(family: &str, table: &str) -> Result<Vec<NamedCounter>, Error> {
    let out = run_nft(
        &["-j", "list", "counters", "table", family, table],
        None,
        "list counters",
    )?;
    let doc: Value = serde_json::from_slice(&out).map_err(|e| Error::Firewall {
        op: "list counters".into(),
        reason: format!("nft printed no JSON: {e}"),
    })?;
    Ok(parse_counters(&doc))
}

fn parse_counters(doc: &Value) -> Vec<NamedCounter> {
    doc["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let c = &item["counter"];
            Some(NamedCounter {
                name: c["name"].as_str()?.to_owned(),
                packets: c["packets"].as_u64().unwrap_or(0),
                bytes: c["bytes"].as_u64().unwrap_or(0),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counters_are_read_by_name() {
        let doc = json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"counter": {"family": "inet", "name": "vxlan_dropped", "table": "weft", "handle": 3, "packets": 7, "bytes": 700}},
            {"counter": {"family": "inet", "name": "vxlan_from_pods_dropped", "table": "weft", "handle": 4, "packets": 2, "bytes": 90}},
        ]});
        let counters = parse_counters(&doc);
        assert_eq!(counters.len(), 2);
        assert_eq!(
            counters[0],
            NamedCounter {
                name: "vxlan_dropped".into(),
                packets: 7,
                bytes: 700
            }
        );
        assert_eq!((counters[1].packets, counters[1].bytes), (2, 90));
    }
}
