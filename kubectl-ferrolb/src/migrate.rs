//! `kubectl ferrolb migrate metallb` (pure): MetalLB's configuration objects (`metallb.io`
//! `v1beta1`, and `v1beta2` for `BGPPeer`) into ferrolb's. ferrolb's API uses MetalLB's field
//! names, so a translation changes the `apiVersion`, makes the object cluster-scoped (MetalLB's
//! live in a namespace) and drops what the cluster wrote (status, uid, managed fields). Every
//! field ferrolb's schema does not have is taken out and reported by object and field, as are
//! two objects that would get one name. Other objects (Deployments, Services, ...) pass through
//! unchanged: ferrolb reads MetalLB's Service annotations too.

use std::collections::{BTreeMap, BTreeSet};

use ferrolb_crds::contract::GROUP;
use serde::Serialize;
use serde_json::{Map, Value};

/// MetalLB's API group.
pub const METALLB_GROUP: &str = "metallb.io";
/// The kinds translated, each with the MetalLB versions read.
pub const KINDS: [(&str, &[&str]); 6] = [
    ("IPAddressPool", &["v1beta1"]),
    ("L2Advertisement", &["v1beta1"]),
    ("BGPPeer", &["v1beta2", "v1beta1"]),
    ("BGPAdvertisement", &["v1beta1"]),
    ("Community", &["v1beta1"]),
    ("BFDProfile", &["v1beta1"]),
];
/// Kinds MetalLB writes itself: what they say, ferrolb says elsewhere.
const STATUS_KINDS: [(&str, &str); 3] = [
    (
        "ConfigurationState",
        "ferrolb reports a refused configuration in the object's own status conditions and its Events",
    ),
    (
        "ServiceL2Status",
        "ferrolb reports the answering node in each Service's ferrolb.io/Announced condition",
    ),
    (
        "ServiceBGPStatus",
        "ferrolb reports the announcing nodes in each Service's ferrolb.io/Announced condition and sessions in BGPPeer status",
    ),
];

/// Something not carried over, by object and field.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Untranslated {
    /// `Kind namespace/name`.
    pub object: String,
    /// The field, when one field is the matter (`spec.vrf`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Why, and what it means.
    pub why: String,
}

impl std::fmt::Display for Untranslated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: {field}: {}", self.object, self.why),
            None => write!(f, "{}: {}", self.object, self.why),
        }
    }
}

/// The result: the objects to apply, what could not be carried over (a problem: the
/// configuration would not behave as it did), and notes (nothing lost).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Migration {
    /// ferrolb's objects, then the others passed through, in input order.
    pub objects: Vec<Value>,
    /// What was left out or changed.
    pub untranslated: Vec<Untranslated>,
    /// What was left out on purpose.
    pub notes: Vec<Untranslated>,
}

/// ferrolb's OpenAPI schema of each kind, from its CRDs.
pub fn schemas() -> BTreeMap<String, Value> {
    ferrolb_crds::crd::all()
        .into_iter()
        .filter_map(|crd| {
            let schema = crd
                .spec
                .versions
                .first()?
                .schema
                .as_ref()?
                .open_api_v3_schema
                .as_ref()?;
            Some((
                crd.spec.names.kind.clone(),
                serde_json::to_value(schema).ok()?,
            ))
        })
        .collect()
}

fn describe(o: &Value) -> String {
    let kind = o["kind"].as_str().unwrap_or("(no kind)");
    let name = o["metadata"]["name"].as_str().unwrap_or("(no name)");
    match o["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Translates `inputs` with ferrolb's `schemas` (by kind).
pub fn translate(inputs: &[Value], schemas: &BTreeMap<String, Value>) -> Migration {
    let mut out = Migration::default();
    let mut names: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut passed = Vec::new();
    for o in inputs {
        let what = describe(o);
        let api_version = o["apiVersion"].as_str().unwrap_or_default();
        let kind = o["kind"].as_str().unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        if group != METALLB_GROUP {
            passed.push(o.clone());
            out.notes.push(Untranslated {
                object: what,
                field: None,
                why: "not a MetalLB object: passed through unchanged".into(),
            });
            continue;
        }
        if let Some((_, instead)) = STATUS_KINDS.iter().find(|(k, _)| *k == kind) {
            out.notes.push(Untranslated {
                object: what,
                field: None,
                why: format!("written by MetalLB, not configuration; left out ({instead})"),
            });
            continue;
        }
        let known = KINDS.iter().find(|(k, _)| *k == kind);
        let (Some((_, versions)), Some(schema)) = (known, schemas.get(kind)) else {
            out.untranslated.push(Untranslated {
                object: what,
                field: None,
                why: format!("ferrolb has no {kind}; left out"),
            });
            continue;
        };
        if !versions.contains(&version) {
            out.untranslated.push(Untranslated {
                object: what,
                field: Some("apiVersion".into()),
                why: format!(
                    "{api_version} is not a MetalLB version of {kind} this translates ({}); left out",
                    versions.iter().map(|v| format!("{METALLB_GROUP}/{v}")).collect::<Vec<_>>().join(", ")
                ),
            });
            continue;
        }
        let name = o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(first) = names.insert((kind.to_string(), name.clone()), what.clone()) {
            out.untranslated.push(Untranslated {
                object: what,
                field: Some("metadata.name".into()),
                why: format!(
                    "ferrolb's {kind} objects are cluster-scoped and {first} already takes the name {name}; left out (rename one)"
                ),
            });
            continue;
        }
        let mut metadata = Map::new();
        metadata.insert("name".into(), Value::String(name));
        for key in ["labels", "annotations"] {
            let mut map = o["metadata"][key].as_object().cloned().unwrap_or_default();
            map.remove("kubectl.kubernetes.io/last-applied-configuration");
            if !map.is_empty() {
                metadata.insert(key.into(), Value::Object(map));
            }
        }
        let mut translated = serde_json::json!({
            "apiVersion": format!("{GROUP}/v1beta1"),
            "kind": kind,
            "metadata": metadata,
        });
        if let Some(spec) = o.get("spec") {
            let mut spec = spec.clone();
            let mut unknown = Vec::new();
            strip_unknown(
                &mut spec,
                &schema["properties"]["spec"],
                "spec",
                &mut unknown,
            );
            for (field, value) in unknown {
                if is_unset(&value) {
                    // MetalLB's CRDs default some fields ferrolb lacks (false, empty): leaving
                    // them out changes nothing.
                    out.notes.push(Untranslated {
                        object: what.clone(),
                        field: Some(field),
                        why: format!("{value} is the same as leaving it out; left out"),
                    });
                    continue;
                }
                out.untranslated.push(Untranslated {
                    object: what.clone(),
                    field: Some(field),
                    why: "ferrolb has no such field; left out, so this object does not do all it did in MetalLB".into(),
                });
            }
            translated["spec"] = spec;
        }
        out.objects.push(translated);
    }
    out.objects.extend(passed);
    out
}

/// `false`, `""`, `[]`, `{}` or `null`: what an unset field reads as.
fn is_unset(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) => false,
    }
}

/// Removes from `value` every object key `schema` does not define, recording each path and
/// the value removed.
fn strip_unknown(
    value: &mut Value,
    schema: &Value,
    path: &str,
    unknown: &mut Vec<(String, Value)>,
) {
    match value {
        Value::Object(map) => {
            if schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true) {
                return;
            }
            let properties = schema["properties"].as_object();
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let keys: BTreeSet<String> = map.keys().cloned().collect();
            for key in keys {
                let child = format!("{path}.{key}");
                let sub = properties.and_then(|p| p.get(&key)).or(additional);
                match sub {
                    Some(sub) => {
                        if let Some(v) = map.get_mut(&key) {
                            strip_unknown(v, sub, &child, unknown);
                        }
                    }
                    None => {
                        if let Some(v) = map.remove(&key) {
                            unknown.push((child, v));
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                strip_unknown(item, &schema["items"], &format!("{path}[{i}]"), unknown);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
#[path = "migrate_tests.rs"]
mod tests;
