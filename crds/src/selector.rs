//! Kubernetes label selectors (`matchLabels` + `matchExpressions`) and their matching.
//!
//! The type mirrors `metav1.LabelSelector` on the wire, so manifests written for MetalLB or any
//! Kubernetes API apply unchanged, but carries its own schema: the operator is an enum and the
//! `values` rule (non-empty for `In`/`NotIn`, empty for `Exists`/`DoesNotExist`) is a CEL rule, so
//! the apiserver refuses a malformed selector instead of the controller guessing at it.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cel;

/// A label query over a set of objects. Empty selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must all be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements that must all hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One requirement of a [`LabelSelector`]: `key operator values`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = cel::selector_requirement_rules()))]
pub struct LabelSelectorRequirement {
    /// The label key the requirement applies to.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    /// How the key's value relates to `values`.
    pub operator: SelectorOperator,
    /// Values for `In` and `NotIn` (at least one); empty for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub values: Vec<String>,
}

/// Operator of a [`LabelSelectorRequirement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectorOperator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent or its value is none of `values`.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy every `matchLabels` entry and every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector has no term at all (and so selects everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

impl LabelSelectorRequirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

/// Whether any selector in `selectors` matches `labels`; an empty list matches everything.
///
/// This is how MetalLB reads lists of selectors (`nodeSelectors`, `namespaceSelectors`, ...): the
/// terms are alternatives, and not setting the list means no restriction.
pub fn any_matches(selectors: &[LabelSelector], labels: &BTreeMap<String, String>) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| s.matches(labels))
}

/// Whether an object that lists `names` and `selectors` (an advertisement's `ipAddressPools`
/// and `ipAddressPoolSelectors`) picks the object `name` with `labels`: named, selected, or,
/// naming and selecting nothing, every object.
pub fn named_or_selected(
    names: &[String],
    selectors: &[LabelSelector],
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    if names.is_empty() && selectors.is_empty() {
        return true;
    }
    // `any_matches` treats an empty list as "everything": only ask it when there are terms.
    names.iter().any(|n| n == name) || (!selectors.is_empty() && any_matches(selectors, labels))
}

/// A label map from `(key, value)` pairs, for building labels and selectors in code and tests.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_or_selected_takes_either_and_nothing_means_all() {
        let l = labels(&[("tier", "edge")]);
        let sel = vec![LabelSelector {
            match_labels: labels(&[("tier", "edge")]),
            ..Default::default()
        }];
        assert!(named_or_selected(&[], &[], "a", &l));
        assert!(named_or_selected(&["a".into()], &[], "a", &l));
        assert!(!named_or_selected(&["b".into()], &[], "a", &l));
        assert!(named_or_selected(&["b".into()], &sel, "a", &l));
        assert!(!named_or_selected(
            &["b".into()],
            &sel,
            "a",
            &BTreeMap::new()
        ));
    }

    fn req(key: &str, operator: SelectorOperator, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn expr(r: LabelSelectorRequirement) -> LabelSelector {
        LabelSelector {
            match_expressions: vec![r],
            ..Default::default()
        }
    }

    #[test]
    fn empty_selector_selects_everything() {
        assert!(LabelSelector::default().matches(&labels(&[])));
        assert!(LabelSelector::default().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_need_every_pair() {
        let s = LabelSelector {
            match_labels: labels(&[("zone", "a"), ("tier", "edge")]),
            ..Default::default()
        };
        assert!(s.matches(&labels(&[("zone", "a"), ("tier", "edge"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("zone", "a")])));
        assert!(!s.matches(&labels(&[("zone", "b"), ("tier", "edge")])));
    }

    #[test]
    fn in_needs_the_label_with_a_listed_value() {
        let s = expr(req("zone", SelectorOperator::In, &["a", "b"]));
        assert!(s.matches(&labels(&[("zone", "b")])));
        assert!(!s.matches(&labels(&[("zone", "c")])));
        assert!(!s.matches(&labels(&[])));
    }

    #[test]
    fn not_in_accepts_an_absent_label() {
        let s = expr(req("zone", SelectorOperator::NotIn, &["a"]));
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("zone", "b")])));
        assert!(!s.matches(&labels(&[("zone", "a")])));
    }

    #[test]
    fn exists_and_does_not_exist_ignore_values() {
        assert!(expr(req("gpu", SelectorOperator::Exists, &[])).matches(&labels(&[("gpu", "")])));
        assert!(!expr(req("gpu", SelectorOperator::Exists, &[])).matches(&labels(&[])));
        assert!(expr(req("gpu", SelectorOperator::DoesNotExist, &[])).matches(&labels(&[])));
        assert!(
            !expr(req("gpu", SelectorOperator::DoesNotExist, &[]))
                .matches(&labels(&[("gpu", "1")]))
        );
    }

    #[test]
    fn labels_and_expressions_must_all_hold() {
        let s = LabelSelector {
            match_labels: labels(&[("zone", "a")]),
            match_expressions: vec![req("tier", SelectorOperator::In, &["edge"])],
        };
        assert!(s.matches(&labels(&[("zone", "a"), ("tier", "edge")])));
        assert!(!s.matches(&labels(&[("zone", "a"), ("tier", "core")])));
    }

    #[test]
    fn a_list_of_selectors_is_a_union_and_empty_means_all() {
        let a = expr(req("zone", SelectorOperator::In, &["a"]));
        let b = expr(req("zone", SelectorOperator::In, &["b"]));
        assert!(any_matches(&[], &labels(&[])));
        assert!(any_matches(
            &[a.clone(), b.clone()],
            &labels(&[("zone", "b")])
        ));
        assert!(!any_matches(&[a, b], &labels(&[("zone", "c")])));
    }

    #[test]
    fn wire_format_is_metav1_label_selector() {
        let s: LabelSelector = serde_json::from_str(
            r#"{"matchLabels":{"a":"b"},"matchExpressions":[{"key":"k","operator":"NotIn","values":["v"]}]}"#,
        )
        .unwrap();
        assert_eq!(s.match_expressions[0].operator, SelectorOperator::NotIn);
        assert_eq!(
            serde_json::to_value(&s).unwrap()["matchExpressions"][0]["values"][0],
            "v"
        );
    }
}
