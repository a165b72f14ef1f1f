//! (policies, pods, namespaces, this node) -> [`RuleModel`] (pure).
//!
//! Semantics as the `networking.k8s.io/v1` reference documents them: a pod selected by
//! no policy of a direction is not isolated in it; once selected, it may send or receive
//! only what the union of the selecting policies' rules allows. `policyTypes`, when
//! absent or empty, is Ingress, plus Egress if the policy has egress rules. Only
//! policies that select a pod of this node are compiled further.

mod index;
mod peers;
mod ports;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};

use super::error::{Effect, PolicyError, Problem};
use super::model::{Direction, NamespaceInfo, PodInfo, PolicyKey};
use super::rules::{policy_id, Peers, PolicyRules, Ports, Rule, RuleModel};
use super::selector::Selector;
use index::Index;
use ports::NamedOn;

/// Compiles the policies for the pods of `node`. Never fails: what cannot be compiled
/// is left out in the way that allows less, and listed in [`RuleModel::problems`].
pub fn compile<'a>(
    policies: impl IntoIterator<Item = &'a NetworkPolicy>,
    pods: impl IntoIterator<Item = &'a PodInfo>,
    namespaces: impl IntoIterator<Item = &'a NamespaceInfo>,
    node: &'a str,
) -> RuleModel {
    let index = Index::new(pods, namespaces, node);
    let mut model = RuleModel::default();
    let mut ids: HashMap<String, PolicyKey> = HashMap::new();
    for policy in policies {
        compile_policy(&index, policy, &mut ids, &mut model);
    }
    model
}

/// `policyTypes` with the API's defaulting; unknown entries are reported and skipped.
fn directions(policy: &NetworkPolicy, problems: &mut Vec<PolicyError>) -> BTreeSet<Direction> {
    let spec = policy.spec.as_ref();
    let listed = spec.and_then(|s| s.policy_types.as_ref());
    match listed.filter(|t| !t.is_empty()) {
        Some(types) => types
            .iter()
            .filter_map(|t| match t.as_str() {
                "Ingress" => Some(Direction::Ingress),
                "Egress" => Some(Direction::Egress),
                other => {
                    problems.push(PolicyError::UnknownPolicyType(other.into()));
                    None
                }
            })
            .collect(),
        None => {
            let mut d = BTreeSet::from([Direction::Ingress]);
            if spec
                .and_then(|s| s.egress.as_ref())
                .is_some_and(|e| !e.is_empty())
            {
                d.insert(Direction::Egress);
            }
            d
        }
    }
}

/// The direction's rules as (peers, ports).
type RawRules<'p> = Vec<(
    Option<&'p [NetworkPolicyPeer]>,
    Option<&'p [NetworkPolicyPort]>,
)>;

fn raw_rules(policy: &NetworkPolicy, direction: Direction) -> RawRules<'_> {
    let Some(spec) = policy.spec.as_ref() else {
        return Vec::new();
    };
    match direction {
        Direction::Ingress => spec
            .ingress
            .iter()
            .flatten()
            .map(|r| (r.from.as_deref(), r.ports.as_deref()))
            .collect(),
        Direction::Egress => spec
            .egress
            .iter()
            .flatten()
            .map(|r| (r.to.as_deref(), r.ports.as_deref()))
            .collect(),
    }
}

fn compile_policy(
    index: &Index<'_>,
    policy: &NetworkPolicy,
    ids: &mut HashMap<String, PolicyKey>,
    model: &mut RuleModel,
) {
    let key = PolicyKey {
        namespace: policy.metadata.namespace.clone().unwrap_or_default(),
        name: policy.metadata.name.clone().unwrap_or_default(),
    };
    let problem = |direction, rule, error, effect| Problem {
        policy: key.clone(),
        direction,
        rule,
        error,
        effect,
    };
    if key.namespace.is_empty() || key.name.is_empty() {
        let p = problem(None, None, PolicyError::NoIdentity, Effect::PolicyIgnored);
        model.problems.push(p);
        return;
    }
    let selector = policy.spec.as_ref().and_then(|s| s.pod_selector.as_ref());
    let selector = match selector.map(Selector::parse).transpose() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            let p = problem(None, None, e.into(), Effect::PolicyIgnored);
            model.problems.push(p);
            return;
        }
    };
    let targets = index.local_pods(&key.namespace, &selector);
    if targets.is_empty() {
        return;
    }
    let mut errors = Vec::new();
    let dirs = directions(policy, &mut errors);
    for e in errors {
        let p = problem(None, None, e, Effect::ValueIgnored);
        model.problems.push(p);
    }
    let id = policy_id(&key);
    let collided = match ids.get(&id) {
        Some(other) if *other != key => {
            let e = PolicyError::NameCollision(other.clone());
            let p = problem(None, None, e, Effect::RulesIgnored);
            model.problems.push(p);
            true
        }
        _ => {
            ids.insert(id.clone(), key.clone());
            false
        }
    };
    let target_ips: BTreeSet<_> = targets.iter().flat_map(|p| p.ips.iter().copied()).collect();
    for direction in dirs {
        let isolated = match direction {
            Direction::Ingress => &mut model.ingress_isolated,
            Direction::Egress => &mut model.egress_isolated,
        };
        isolated.extend(target_ips.iter().copied());
        if collided {
            continue;
        }
        let mut rules = Vec::new();
        for (i, (peers, ports)) in raw_rules(policy, direction).into_iter().enumerate() {
            let mut warnings = Vec::new();
            let rule = compile_rule(
                index,
                &key.namespace,
                direction,
                &targets,
                peers,
                ports,
                &mut warnings,
            );
            for w in warnings {
                let p = problem(Some(direction), Some(i), w, Effect::MatchesNothing);
                model.problems.push(p);
            }
            match rule {
                Ok((peers, ports)) => rules.push(Rule {
                    index: i,
                    peers,
                    ports,
                }),
                Err(e) => {
                    let p = problem(Some(direction), Some(i), e, Effect::RuleIgnored);
                    model.problems.push(p);
                }
            }
        }
        let entry = PolicyRules {
            id: id.clone(),
            targets: target_ips.clone(),
            rules,
        };
        model.policies.insert((key.clone(), direction), entry);
    }
}

fn compile_rule(
    index: &Index<'_>,
    namespace: &str,
    direction: Direction,
    targets: &[&PodInfo],
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
    warnings: &mut Vec<PolicyError>,
) -> Result<(Peers, Ports), PolicyError> {
    // Ports first: a bad port rejects the rule before any selector is evaluated.
    let ports = ports::parse_all(ports)?;
    let peers = peers::resolve(index, namespace, peers, &mut |e| warnings.push(e))?;
    let named_on = match (direction, &peers) {
        (Direction::Ingress, _) => NamedOn::Targets(targets),
        (Direction::Egress, Peers::Any) => NamedOn::Destinations(&index.all, None),
        (Direction::Egress, Peers::Only(r)) => NamedOn::Destinations(&index.all, Some(r)),
    };
    let ports = ports::resolve(ports.as_deref(), named_on);
    Ok((peers, ports))
}
