//! weft's accepts in the iptables `FORWARD` chain, so that a drop policy set there by
//! someone else (Docker sets `FORWARD` to `DROP`) does not drop pod traffic.
//!
//! Why not only nftables: the kernel runs every base chain registered on the forward hook,
//! and a packet dropped by any of them is gone. The `accept` in weft's own `inet weft`
//! table ([`crate::firewall`]) cannot undo a drop in `ip filter FORWARD`, so, like flannel,
//! weft also puts accepts into that chain: for each cluster CIDR `-s CIDR -j ACCEPT` and
//! `-d CIDR -j ACCEPT`, commented `weft`, inserted at the top.
//!
//! Mechanism (decided here): the `iptables`/`ip6tables` binaries, because they speak both
//! backends correctly (iptables-nft's rule encoding is an implementation detail of that
//! tool, and iptables-legacy's tables are not reachable through nftables at all). Each
//! backend whose binary is present (`iptables-nft`, `iptables-legacy`; a plain `iptables`
//! is classified by its `--version`) is looked at, since a drop in either one drops the
//! packet:
//! * the chain is listed with `-S FORWARD` (which creates nothing on the nft backend; on
//!   the legacy backend it would load the table, so legacy is only listed when the
//!   namespace already has its `filter` table, per `/proc/thread-self/net/ip_tables_names`);
//! * a chain that does not matter (policy ACCEPT and no rules: it does not exist or is
//!   empty) is left alone;
//! * otherwise the pure [`plan`] says what to delete (weft-commented rules that are no
//!   longer wanted) and what to insert (missing accepts, at position 1), and only that is
//!   run. An accept that exists but is no longer first is left where it is (flannel does
//!   the same); applying twice runs no command after the listing.
//!
//! Without any iptables binary nothing is done and a warning is logged once: a FORWARD
//! drop policy would then break pods. [`remove`] (for `weft-agent cleanup`) deletes every
//! `weft`-commented rule of the chain in every backend.
//!
//! Everything runs in the calling thread's network namespace (children inherit it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use ipnet::IpNet;

use crate::datapath::Error;

/// The comment that marks weft's rules.
pub const COMMENT: &str = "weft";
pub const CHAIN: &str = "FORWARD";
/// Seconds to wait for the xtables lock (`-w`).
const LOCK_WAIT_SECS: &str = "5";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `-s`
    From,
    /// `-d`
    To,
}

/// One weft accept: `-s|-d NET -m comment --comment weft -j ACCEPT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accept {
    pub direction: Direction,
    pub net: IpNet,
}

impl Accept {
    /// The rule specification, as `iptables -S` prints it.
    pub fn spec(&self) -> Vec<String> {
        let flag = match self.direction {
            Direction::From => "-s",
            Direction::To => "-d",
        };
        [
            flag,
            &self.net.to_string(),
            "-m",
            "comment",
            "--comment",
            COMMENT,
        ]
        .into_iter()
        .chain(["-j", "ACCEPT"])
        .map(String::from)
        .collect()
    }
}

/// The accepts weft wants for one family, in chain order: for each cluster CIDR of the
/// family, from it, then to it.
pub fn desired(cluster_cidrs: &[IpNet], family: Family) -> Vec<Accept> {
    let mut out = Vec::new();
    for net in cluster_cidrs.iter().filter(|n| Family::of(n) == family) {
        for direction in [Direction::From, Direction::To] {
            let a = Accept {
                direction,
                net: net.trunc(),
            };
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// A `FORWARD` chain as listed by `iptables -S FORWARD`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// `-P FORWARD <policy>`
    pub policy: Option<String>,
    /// Each `-A FORWARD ...` rule's tokens after the chain name, in order.
    pub rules: Vec<Vec<String>>,
}

impl Chain {
    pub fn parse(listing: &str) -> Chain {
        let mut chain = Chain::default();
        for line in listing.lines() {
            let mut tokens = line.split_whitespace();
            match (tokens.next(), tokens.next()) {
                (Some("-P"), Some(CHAIN)) => chain.policy = tokens.next().map(String::from),
                (Some("-A"), Some(CHAIN)) => chain.rules.push(tokens.map(String::from).collect()),
                _ => {}
            }
        }
        chain
    }

    /// False for a chain that cannot drop anything: policy ACCEPT (or none) and no rules,
    /// which is also how a missing chain lists on the nft backend.
    pub fn matters(&self) -> bool {
        !self.rules.is_empty() || self.policy.as_deref().is_some_and(|p| p != "ACCEPT")
    }
}

fn is_weft(rule: &[String]) -> bool {
    rule.windows(2)
        .any(|w| w[0] == "--comment" && w[1].trim_matches('"') == COMMENT)
}

/// The accept a listed rule is, if it has exactly weft's shape.
fn parse_accept(rule: &[String]) -> Option<Accept> {
    let mut direction_net = None;
    let (mut comment, mut accept, mut module) = (false, false, false);
    let mut i = 0;
    while i < rule.len() {
        let value = rule.get(i + 1).map(String::as_str);
        match (rule[i].as_str(), value) {
            ("-s", Some(v)) if direction_net.is_none() => {
                direction_net = Some((Direction::From, v.parse::<IpNet>().ok()?))
            }
            ("-d", Some(v)) if direction_net.is_none() => {
                direction_net = Some((Direction::To, v.parse::<IpNet>().ok()?))
            }
            ("-m", Some("comment")) => module = true,
            ("--comment", Some(v)) if v.trim_matches('"') == COMMENT => comment = true,
            ("-j", Some("ACCEPT")) => accept = true,
            _ => return None,
        }
        i += 2;
    }
    let (direction, net) = direction_net?;
    (comment && accept && module).then_some(Accept {
        direction,
        net: net.trunc(),
    })
}

/// The commands (arguments after the binary, without `-w`) that bring `chain` to hold
/// `desired`: deletions of unwanted or duplicate weft rules first, then the missing
/// accepts inserted at position 1 (in reverse, so they end up in `desired`'s order).
/// Nothing for a chain that does not matter ([`Chain::matters`]).
pub fn plan(desired: &[Accept], chain: &Chain) -> Vec<Vec<String>> {
    if !chain.matters() {
        return Vec::new();
    }
    let mut cmds = Vec::new();
    let mut present = Vec::new();
    for rule in chain.rules.iter().filter(|r| is_weft(r)) {
        match parse_accept(rule) {
            Some(a) if desired.contains(&a) && !present.contains(&a) => present.push(a),
            _ => cmds.push(delete(rule)),
        }
    }
    for a in desired.iter().rev().filter(|a| !present.contains(a)) {
        let mut cmd: Vec<String> = ["-I", CHAIN, "1"].map(String::from).to_vec();
        cmd.extend(a.spec());
        cmds.push(cmd);
    }
    cmds
}

/// The commands that delete every weft rule of `chain`.
pub fn removal(chain: &Chain) -> Vec<Vec<String>> {
    chain
        .rules
        .iter()
        .filter(|r| is_weft(r))
        .map(|r| delete(r))
        .collect()
}

fn delete(rule: &[String]) -> Vec<String> {
    let mut cmd = vec!["-D".to_string(), CHAIN.to_string()];
    cmd.extend(rule.iter().map(|t| t.trim_matches('"').to_string()));
    cmd
}

// ---- I/O ------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Nft,
    Legacy,
}

/// One iptables backend: its binaries for IPv4 and IPv6.
#[derive(Clone, Debug)]
struct Backend {
    kind: Kind,
    v4: PathBuf,
    v6: Option<PathBuf>,
}

impl Backend {
    fn binary(&self, family: Family) -> Option<&Path> {
        match family {
            Family::V4 => Some(&self.v4),
            Family::V6 => self.v6.as_deref(),
        }
    }

    /// Whether listing the chain is harmless and meaningful: always for nft; for legacy
    /// only when the namespace already has the `filter` table.
    fn has_filter_table(&self, family: Family) -> bool {
        match self.kind {
            Kind::Nft => true,
            Kind::Legacy => {
                let file = match family {
                    Family::V4 => "/proc/thread-self/net/ip_tables_names",
                    Family::V6 => "/proc/thread-self/net/ip6_tables_names",
                };
                std::fs::read_to_string(file)
                    .map(|s| s.lines().any(|l| l.trim() == "filter"))
                    .unwrap_or(false)
            }
        }
    }
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn backends() -> Vec<Backend> {
    let mut out = Vec::new();
    for (kind, v4, v6) in [
        (Kind::Nft, "iptables-nft", "ip6tables-nft"),
        (Kind::Legacy, "iptables-legacy", "ip6tables-legacy"),
    ] {
        if let Some(v4) = find_binary(v4) {
            out.push(Backend {
                kind,
                v4,
                v6: find_binary(v6),
            });
        }
    }
    if out.is_empty() {
        if let Some(v4) = find_binary("iptables") {
            let version = Command::new(&v4)
                .arg("--version")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let kind = if version.contains("legacy") {
                Kind::Legacy
            } else {
                Kind::Nft
            };
            out.push(Backend {
                kind,
                v4,
                v6: find_binary("ip6tables"),
            });
        }
    }
    out
}

fn run(binary: &Path, args: &[String]) -> Result<String, Error> {
    let out = Command::new(binary)
        .args(["-w", LOCK_WAIT_SECS])
        .args(args)
        .output()
        .map_err(|e| Error::Firewall {
            op: format!("{} {}", binary.display(), args.join(" ")),
            reason: format!("cannot run: {e}"),
        })?;
    if !out.status.success() {
        return Err(Error::Firewall {
            op: format!("{} {}", binary.display(), args.join(" ")),
            reason: format!(
                "exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What [`ensure`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// No iptables binary was found: nothing could be checked.
    pub no_iptables: bool,
    /// Commands run (insertions and deletions).
    pub changes: usize,
}

static NO_IPTABLES_WARNING: Once = Once::new();

/// Makes every backend's `FORWARD` chain that matters hold weft's accepts for
/// `cluster_cidrs` (and no stale ones). Every backend and family is tried; the error
/// names the first failure.
pub fn ensure(cluster_cidrs: &[IpNet]) -> Result<Outcome, Error> {
    let backends = backends();
    if backends.is_empty() {
        NO_IPTABLES_WARNING.call_once(|| {
            tracing::warn!(
                "no iptables binary: a DROP policy in the iptables FORWARD chain (e.g. Docker's) \
                 would drop pod traffic; install iptables"
            )
        });
        return Ok(Outcome {
            no_iptables: true,
            changes: 0,
        });
    }
    let mut outcome = Outcome::default();
    let mut first_error = None;
    for b in &backends {
        for family in [Family::V4, Family::V6] {
            let want = desired(cluster_cidrs, family);
            let Some(bin) = b.binary(family) else {
                continue;
            };
            if !b.has_filter_table(family) {
                continue;
            }
            let result = run(bin, &["-S".into(), CHAIN.into()]).and_then(|listing| {
                for cmd in plan(&want, &Chain::parse(&listing)) {
                    run(bin, &cmd)?;
                    tracing::info!(binary = %bin.display(), rule = cmd.join(" "), "iptables FORWARD");
                    outcome.changes += 1;
                }
                Ok(())
            });
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(outcome),
    }
}

/// Deletes every weft rule from every backend's `FORWARD` chain; returns how many.
pub fn remove() -> Result<usize, Error> {
    let mut removed = 0;
    for b in &backends() {
        for family in [Family::V4, Family::V6] {
            let Some(bin) = b.binary(family) else {
                continue;
            };
            if !b.has_filter_table(family) {
                continue;
            }
            let listing = run(bin, &["-S".into(), CHAIN.into()])?;
            for cmd in removal(&Chain::parse(&listing)) {
                run(bin, &cmd)?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn line(cmd: &[String]) -> String {
        cmd.join(" ")
    }

    const DOCKER: &str =
        "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-FORWARD\n";

    #[test]
    fn desired_is_per_family_in_order_and_truncated() {
        let cidrs = nets(&["10.244.0.0/16", "fd00:10:244::/56", "10.96.1.1/12"]);
        let v4 = desired(&cidrs, Family::V4);
        let specs: Vec<String> = v4.iter().map(|a| line(&a.spec())).collect();
        assert_eq!(
            specs,
            [
                "-s 10.244.0.0/16 -m comment --comment weft -j ACCEPT",
                "-d 10.244.0.0/16 -m comment --comment weft -j ACCEPT",
                "-s 10.96.0.0/12 -m comment --comment weft -j ACCEPT",
                "-d 10.96.0.0/12 -m comment --comment weft -j ACCEPT",
            ]
        );
        assert_eq!(desired(&cidrs, Family::V6).len(), 2);
    }

    #[test]
    fn parses_a_listing() {
        let c = Chain::parse(DOCKER);
        assert_eq!(c.policy.as_deref(), Some("DROP"));
        assert_eq!(c.rules.len(), 2);
        assert!(c.matters());
        assert!(!Chain::parse("-P FORWARD ACCEPT\n").matters());
        assert!(!Chain::parse("").matters());
    }

    #[test]
    fn inserts_missing_accepts_at_the_top_in_order() {
        let want = desired(&nets(&["10.244.0.0/16"]), Family::V4);
        let cmds = plan(&want, &Chain::parse(DOCKER));
        let lines: Vec<String> = cmds.iter().map(|c| line(c)).collect();
        assert_eq!(
            lines,
            [
                "-I FORWARD 1 -d 10.244.0.0/16 -m comment --comment weft -j ACCEPT",
                "-I FORWARD 1 -s 10.244.0.0/16 -m comment --comment weft -j ACCEPT",
            ]
        );
    }

    #[test]
    fn nothing_to_do_when_present_or_when_the_chain_does_not_matter() {
        let want = desired(&nets(&["10.244.0.0/16"]), Family::V4);
        let listing = "-P FORWARD DROP\n\
            -A FORWARD -j DOCKER-USER\n\
            -A FORWARD -s 10.244.0.0/16 -m comment --comment weft -j ACCEPT\n\
            -A FORWARD -d 10.244.0.0/16 -m comment --comment \"weft\" -j ACCEPT\n";
        assert!(plan(&want, &Chain::parse(listing)).is_empty());
        assert!(plan(&want, &Chain::parse("-P FORWARD ACCEPT\n")).is_empty());
    }

    #[test]
    fn stale_and_duplicate_weft_rules_are_deleted_others_are_not() {
        let want = desired(&nets(&["10.244.0.0/16"]), Family::V4);
        let listing = "-P FORWARD DROP\n\
            -A FORWARD -s 10.244.0.0/16 -m comment --comment weft -j ACCEPT\n\
            -A FORWARD -s 10.244.0.0/16 -m comment --comment weft -j ACCEPT\n\
            -A FORWARD -s 10.200.0.0/16 -m comment --comment weft -j ACCEPT\n\
            -A FORWARD -s 10.244.0.0/16 -j ACCEPT\n\
            -A FORWARD -s 10.244.0.0/16 -m comment --comment \"not weft\" -j ACCEPT\n";
        let lines: Vec<String> = plan(&want, &Chain::parse(listing))
            .iter()
            .map(|c| line(c))
            .collect();
        assert_eq!(
            lines,
            [
                "-D FORWARD -s 10.244.0.0/16 -m comment --comment weft -j ACCEPT",
                "-D FORWARD -s 10.200.0.0/16 -m comment --comment weft -j ACCEPT",
                "-I FORWARD 1 -d 10.244.0.0/16 -m comment --comment weft -j ACCEPT",
            ]
        );
    }

    #[test]
    fn a_weft_comment_on_another_shape_is_stale() {
        let rule: Vec<String> = "-s 10.244.0.0/16 -p tcp -m comment --comment weft -j ACCEPT"
            .split(' ')
            .map(String::from)
            .collect();
        assert!(is_weft(&rule));
        assert_eq!(parse_accept(&rule), None);
    }

    #[test]
    fn removal_deletes_only_weft_rules() {
        let listing = "-P FORWARD DROP\n\
            -A FORWARD -d fd00:10:244::/56 -m comment --comment weft -j ACCEPT\n\
            -A FORWARD -j DOCKER-USER\n";
        let lines: Vec<String> = removal(&Chain::parse(listing))
            .iter()
            .map(|c| line(c))
            .collect();
        assert_eq!(
            lines,
            ["-D FORWARD -d fd00:10:244::/56 -m comment --comment weft -j ACCEPT"]
        );
    }
}
