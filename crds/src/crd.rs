//! CustomResourceDefinitions generated from the types, as committed under the Helm chart.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{BFDProfile, BGPAdvertisement, BGPPeer, Community, IPAddressPool, L2Advertisement};

/// Every CRD ferrolb defines, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        IPAddressPool::crd(),
        spec_optional(L2Advertisement::crd()),
        BGPPeer::crd(),
        spec_optional(BGPAdvertisement::crd()),
        spec_optional(Community::crd()),
        spec_optional(BFDProfile::crd()),
    ]
}

/// The CRD with `spec` optional and defaulted to `{}` by the apiserver: every field of these
/// kinds is optional, and MetalLB's documented manifests leave `spec` out entirely (an
/// advertisement of every pool from every node).
fn spec_optional(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        if let Some(required) = schema.required.as_mut() {
            required.retain(|r| r != "spec");
        }
        if let Some(spec) = schema.properties.as_mut().and_then(|p| p.get_mut("spec")) {
            spec.default = Some(
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON(
                    serde_json::json!({}),
                ),
            );
        }
    }
    crd
}

/// One YAML document for `crd`, as written to the chart (a header says it is generated).
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    Ok(format!(
        "# Generated from the ferrolb-crds crate by `cargo xtask crds`; do not edit.\n{}",
        serde_yaml::to_string(crd)?
    ))
}

/// All CRDs as one multi-document YAML stream (what `ferrolb-controller crds` prints).
pub fn all_yaml() -> Result<String, serde_yaml::Error> {
    let docs: Result<Vec<String>, _> = all().iter().map(to_yaml).collect();
    Ok(docs?.join("---\n"))
}

/// File name of `crd` in the chart (`ipaddresspools.ferrolb.io.yaml`).
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_of(crd: &CustomResourceDefinition) -> serde_json::Value {
        let v = &crd.spec.versions[0];
        serde_json::to_value(
            v.schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn crds_are_cluster_scoped_in_our_group() {
        for crd in all() {
            assert_eq!(crd.spec.group, "ferrolb.io");
            assert_eq!(crd.spec.scope, "Cluster");
            assert_eq!(crd.spec.versions[0].name, "v1beta1");
        }
    }

    #[test]
    fn address_items_carry_every_cel_rule_with_bounded_cost() {
        let s = schema_of(&IPAddressPool::crd());
        let addresses = &s["properties"]["spec"]["properties"]["addresses"];
        assert_eq!(addresses["minItems"], 1);
        assert!(addresses["maxItems"].is_u64());
        assert!(addresses["items"]["maxLength"].is_u64());
        assert_eq!(
            addresses["items"]["x-kubernetes-validations"]
                .as_array()
                .unwrap()
                .len(),
            5
        );
        assert_eq!(
            s["properties"]["spec"]["properties"]["autoAssign"]["default"],
            true
        );
    }

    #[test]
    fn pool_printer_columns_show_addresses_auto_assign_and_counts() {
        let crd = IPAddressPool::crd();
        let cols: Vec<_> = crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            cols,
            [
                "Addresses",
                "Auto Assign",
                "Assigned IPv4",
                "Available IPv4",
                "Assigned IPv6",
                "Available IPv6",
                "Age"
            ]
        );
    }

    #[test]
    fn yaml_stream_has_one_document_per_crd() {
        let y = all_yaml().unwrap();
        assert_eq!(y.matches("kind: CustomResourceDefinition").count(), 6);
        assert!(y.contains("name: ipaddresspools.ferrolb.io"));
        assert!(y.contains("name: l2advertisements.ferrolb.io"));
    }
}
