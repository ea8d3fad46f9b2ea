//! The configuration reference (`docs/reference.md`), generated from the CRDs' schemas: every
//! field of every kind with its type, limits, default and description, so the reference says
//! exactly what the apiserver enforces. `cargo xtask crds` writes it with the CRD YAML;
//! `cargo xtask test` fails when it is stale.

use std::fmt::Write;

use serde_json::Value;

use crate::crd;

/// The whole reference, in Markdown.
pub fn markdown() -> String {
    let mut out = String::from(
        "# API reference\n\n\
         Generated from ferrolb's CRDs by `cargo xtask crds`; do not edit. Every field of every \
         kind, as the apiserver checks it (types, limits, defaults; the rules that span fields are \
         in each kind's description). How the kinds work together: [configuration](configuration.md).\n",
    );
    for c in crd::all() {
        let names = &c.spec.names;
        let Some(version) = c.spec.versions.first() else {
            continue;
        };
        let Some(schema) = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
        else {
            continue;
        };
        let short = names
            .short_names
            .as_ref()
            .map(|s| {
                s.iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|s| !s.is_empty())
            .map(|s| format!("; short name {s}"))
            .unwrap_or_default();
        let _ = write!(
            out,
            "\n## {kind}\n\n`{group}/{v}`, {scope}{short}. {desc}\n\n\
             | field | type | description |\n|---|---|---|\n",
            kind = names.kind,
            group = c.spec.group,
            v = version.name,
            scope = if c.spec.scope == "Cluster" {
                "cluster-scoped"
            } else {
                "namespaced"
            },
            desc = one_line(schema["description"].as_str().unwrap_or_default()),
        );
        for part in ["spec", "status"] {
            let sub = &schema["properties"][part];
            if sub.is_object() {
                let required = schema["required"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|x| x == part));
                rows(&mut out, part, sub, required);
            }
        }
    }
    out
}

/// A table row for `path` and one for every field below it.
fn rows(out: &mut String, path: &str, schema: &Value, required: bool) {
    let _ = writeln!(
        out,
        "| `{path}` | {} | {} |",
        type_of(schema, required),
        cell(schema["description"].as_str().unwrap_or_default())
    );
    let required_of = |s: &Value, name: &str| {
        s["required"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x == name))
    };
    if let Some(props) = schema["properties"].as_object() {
        for (name, sub) in props {
            rows(
                out,
                &format!("{path}.{name}"),
                sub,
                required_of(schema, name),
            );
        }
    }
    let items = &schema["items"];
    if let Some(props) = items["properties"].as_object() {
        for (name, sub) in props {
            rows(
                out,
                &format!("{path}[].{name}"),
                sub,
                required_of(items, name),
            );
        }
    }
}

/// `string, required, at most 253 characters, default "x"`, `list of string`, `one of a, b`.
fn type_of(s: &Value, required: bool) -> String {
    let mut parts = Vec::new();
    let base = match s["type"].as_str() {
        Some("array") => format!(
            "list of {}",
            s["items"]["type"].as_str().unwrap_or("objects")
        ),
        Some("object") if s["additionalProperties"].is_object() => format!(
            "map of {}",
            s["additionalProperties"]["type"]
                .as_str()
                .unwrap_or("values")
        ),
        Some(t) => t.to_string(),
        None if s["x-kubernetes-int-or-string"] == true => "integer or string".into(),
        None => "any".into(),
    };
    parts.push(base);
    if required {
        parts.push("required".into());
    }
    if let Some(values) = s["enum"].as_array() {
        let values: Vec<String> = values
            .iter()
            .filter_map(|v| v.as_str().map(|v| format!("`{v}`")))
            .collect();
        parts.push(format!("one of {}", values.join(", ")));
    }
    match (s["minimum"].as_f64(), s["maximum"].as_f64()) {
        (Some(lo), Some(hi)) => parts.push(format!("{lo}-{hi}")),
        (Some(lo), None) => parts.push(format!("at least {lo}")),
        (None, Some(hi)) => parts.push(format!("at most {hi}")),
        (None, None) => {}
    }
    if let Some(n) = s["maxLength"].as_u64() {
        parts.push(format!("at most {n} characters"));
    }
    if let Some(n) = s["maxItems"].as_u64() {
        parts.push(format!("at most {n} items"));
    }
    if !s["default"].is_null() {
        parts.push(format!("default `{}`", s["default"]));
    }
    if s["x-kubernetes-validations"].is_array() {
        parts.push("checked by rules".into());
    }
    parts.join(", ")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn cell(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_and_its_fields_are_in_the_reference() {
        let md = markdown();
        for kind in [
            "IPAddressPool",
            "L2Advertisement",
            "BGPPeer",
            "BGPAdvertisement",
            "Community",
            "BFDProfile",
        ] {
            assert!(md.contains(&format!("\n## {kind}\n")), "{kind}");
        }
        let row = md
            .lines()
            .find(|l| l.starts_with("| `spec.addresses` |"))
            .unwrap();
        assert!(row.contains("list of string, required"), "{row}");
        let row = md
            .lines()
            .find(|l| l.starts_with("| `spec.dynamicASN` |"))
            .unwrap();
        assert!(row.contains("one of `internal`, `external`"), "{row}");
        assert!(md.contains("| `status.sessions[].state` |"));
    }

    #[test]
    fn types_say_limits_defaults_and_rules() {
        let s = serde_json::json!({"type": "integer", "minimum": 1.0, "maximum": 65535.0,
                                   "default": 179, "x-kubernetes-validations": []});
        assert_eq!(
            type_of(&s, true),
            "integer, required, 1-65535, default `179`, checked by rules"
        );
        assert_eq!(cell("a |\n b"), "a \\| b");
    }
}
