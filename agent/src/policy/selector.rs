//! Label selectors (`matchLabels`, `matchExpressions`) parsed once and matched many times.
//!
//! The API server validates selectors, but this code must not trust that (an older
//! server, a future operator): a selector it cannot read is an error the caller reports
//! and treats as matching nothing, never a panic and never "everything".

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::model::Labels;

/// Why a selector could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("label selector on {key:?}: unknown operator {operator:?}")]
    UnknownOperator { key: String, operator: String },
    #[error("label selector on {key:?}: operator {operator} needs values")]
    NoValues { key: String, operator: String },
    #[error("label selector on {key:?}: operator {operator} takes no values")]
    UnexpectedValues { key: String, operator: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            // As in Kubernetes: a missing key is "not in" any set.
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A parsed label selector: all requirements must hold; none means everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches every label set (`{}`).
    pub fn everything() -> Selector {
        Selector::default()
    }

    pub fn parse(sel: &LabelSelector) -> Result<Selector, SelectorError> {
        let mut requirements: Vec<Requirement> = sel
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::Equals(k.clone(), v.clone()))
            .collect();
        for e in sel.match_expressions.iter().flatten() {
            let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
            let key = e.key.clone();
            let err_no = || SelectorError::NoValues {
                key: e.key.clone(),
                operator: e.operator.clone(),
            };
            let err_some = || SelectorError::UnexpectedValues {
                key: e.key.clone(),
                operator: e.operator.clone(),
            };
            requirements.push(match e.operator.as_str() {
                "In" if values.is_empty() => return Err(err_no()),
                "NotIn" if values.is_empty() => return Err(err_no()),
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" | "DoesNotExist" if !values.is_empty() => return Err(err_some()),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => {
                    return Err(SelectorError::UnknownOperator {
                        key,
                        operator: other.into(),
                    })
                }
            });
        }
        Ok(Selector { requirements })
    }

    /// Whether the selector is `{}`.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn sel(ml: &[(&str, &str)], me: Vec<LabelSelectorRequirement>) -> LabelSelector {
        LabelSelector {
            match_labels: (!ml.is_empty()).then(|| labels(ml)),
            match_expressions: (!me.is_empty()).then_some(me),
        }
    }

    #[test]
    fn operators_table() {
        let a = labels(&[("app", "web"), ("tier", "front")]);
        let none = labels(&[]);
        // (selector, matches a, matches no labels)
        let cases = [
            (sel(&[], vec![]), true, true),
            (sel(&[("app", "web")], vec![]), true, false),
            (sel(&[("app", "db")], vec![]), false, false),
            (
                sel(&[("app", "web"), ("tier", "back")], vec![]),
                false,
                false,
            ),
            (
                sel(&[], vec![expr("app", "In", Some(&["db", "web"]))]),
                true,
                false,
            ),
            (
                sel(&[], vec![expr("app", "In", Some(&["db"]))]),
                false,
                false,
            ),
            (
                sel(&[], vec![expr("app", "NotIn", Some(&["db"]))]),
                true,
                true,
            ),
            (
                sel(&[], vec![expr("app", "NotIn", Some(&["web"]))]),
                false,
                true,
            ),
            (sel(&[], vec![expr("tier", "Exists", None)]), true, false),
            (
                sel(&[], vec![expr("tier", "DoesNotExist", None)]),
                false,
                true,
            ),
            (
                sel(&[], vec![expr("tier", "Exists", Some(&[]))]),
                true,
                false,
            ),
            (
                sel(&[("app", "web")], vec![expr("tier", "DoesNotExist", None)]),
                false,
                false,
            ),
        ];
        for (i, (s, on_a, on_none)) in cases.iter().enumerate() {
            let p = Selector::parse(s).unwrap();
            assert_eq!(p.matches(&a), *on_a, "case {i}: {s:?} on {a:?}");
            assert_eq!(p.matches(&none), *on_none, "case {i}: {s:?} on no labels");
        }
    }

    #[test]
    fn malformed_selectors_are_errors_not_panics() {
        let cases = [
            (
                expr("app", "Equals", Some(&["x"])),
                SelectorError::UnknownOperator {
                    key: "app".into(),
                    operator: "Equals".into(),
                },
            ),
            (
                expr("app", "In", None),
                SelectorError::NoValues {
                    key: "app".into(),
                    operator: "In".into(),
                },
            ),
            (
                expr("app", "NotIn", Some(&[])),
                SelectorError::NoValues {
                    key: "app".into(),
                    operator: "NotIn".into(),
                },
            ),
            (
                expr("app", "Exists", Some(&["x"])),
                SelectorError::UnexpectedValues {
                    key: "app".into(),
                    operator: "Exists".into(),
                },
            ),
        ];
        for (e, want) in cases {
            assert_eq!(Selector::parse(&sel(&[], vec![e])), Err(want));
        }
    }

    #[test]
    fn empty_selector_is_everything() {
        assert!(Selector::parse(&LabelSelector::default())
            .unwrap()
            .is_everything());
        assert!(!Selector::parse(&sel(&[("a", "b")], vec![]))
            .unwrap()
            .is_everything());
    }
}
