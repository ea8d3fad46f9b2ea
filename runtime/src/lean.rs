//! Watched objects decoded without the field sets of their managed fields.
//!
//! Every writer of an object adds a `metadata.managedFields` entry whose `fieldsV1` names, as a
//! JSON tree, each field it set. Decoded as `serde_json::Value` that tree is the most allocating
//! part of a Service, and the apiserver sends it with every watch event and write answer.
//! ferrolb reads who manages an object, never which fields, so these types walk the trees with
//! serde's `IgnoredAny` (no allocation) and keep everything else as k8s-openapi has it.

use k8s_openapi::api::core::v1::{Service, ServiceSpec, ServiceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference, Time,
};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// `metadata` without the managed fields' field sets.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    managed_fields: Option<Vec<Manager>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

/// A `managedFields` entry; `fieldsV1`, not named here, is skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manager {
    api_version: Option<String>,
    fields_type: Option<String>,
    manager: Option<String>,
    operation: Option<String>,
    subresource: Option<String>,
    time: Option<Time>,
}

/// Decodes `metadata` as [`ObjectMeta`] whose managed fields have no `fields_v1`.
pub fn object_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = Metadata::deserialize(d)?;
    Ok(ObjectMeta {
        annotations: m.annotations,
        creation_timestamp: m.creation_timestamp,
        deletion_grace_period_seconds: m.deletion_grace_period_seconds,
        deletion_timestamp: m.deletion_timestamp,
        finalizers: m.finalizers,
        generate_name: m.generate_name,
        generation: m.generation,
        labels: m.labels,
        managed_fields: m.managed_fields.map(|entries| {
            entries
                .into_iter()
                .map(|e| ManagedFieldsEntry {
                    api_version: e.api_version,
                    fields_type: e.fields_type,
                    fields_v1: None,
                    manager: e.manager,
                    operation: e.operation,
                    subresource: e.subresource,
                    time: e.time,
                })
                .collect()
        }),
        name: m.name,
        namespace: m.namespace,
        owner_references: m.owner_references,
        resource_version: m.resource_version,
        self_link: m.self_link,
        uid: m.uid,
    })
}

/// A Service decoded without its managed fields' field sets. `Api<LeanService>` lists, watches
/// and writes Services exactly as `Api<Service>` does; the Service is `.0`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeanService(pub Service);

impl<'de> Deserialize<'de> for LeanService {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Parts {
            #[serde(default, deserialize_with = "object_meta")]
            metadata: ObjectMeta,
            spec: Option<ServiceSpec>,
            status: Option<ServiceStatus>,
        }
        let Parts {
            metadata,
            spec,
            status,
        } = Parts::deserialize(d)?;
        Ok(LeanService(Service {
            metadata,
            spec,
            status,
        }))
    }
}

impl k8s_openapi::Resource for LeanService {
    const API_VERSION: &'static str = <Service as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <Service as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <Service as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <Service as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <Service as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = <Service as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::Metadata for LeanService {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.0.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A Service as the apiserver sends it after a create and a status apply.
    fn service_json() -> serde_json::Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "web",
                "namespace": "shop",
                "uid": "0b6f1f5e-52a8-4c39-9d1b-3d4f5e6a7b8c",
                "resourceVersion": "42",
                "creationTimestamp": "2026-12-04T10:00:00Z",
                "labels": {"app": "web"},
                "annotations": {"example.com/owner": "team-a"},
                "finalizers": ["service.kubernetes.io/load-balancer-cleanup"],
                "managedFields": [
                    {
                        "manager": "kubectl",
                        "operation": "Update",
                        "apiVersion": "v1",
                        "time": "2026-12-04T10:00:00Z",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:spec": {"f:type": {}, "f:ports": {"k:{\"port\":80}": {".": {}}}}}
                    },
                    {
                        "manager": "ferrolb-controller",
                        "operation": "Apply",
                        "apiVersion": "v1",
                        "time": "2026-12-04T10:00:01Z",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:status": {"f:loadBalancer": {"f:ingress": {}}}},
                        "subresource": "status"
                    }
                ]
            },
            "spec": {
                "type": "LoadBalancer",
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}],
                "ipFamilies": ["IPv4"],
                "externalTrafficPolicy": "Local"
            },
            "status": {
                "loadBalancer": {"ingress": [{"ip": "198.51.100.200", "ipMode": "VIP"}]},
                "conditions": [{
                    "type": "example.com/Reachable",
                    "status": "True",
                    "reason": "Probed",
                    "message": "answered from 198.51.100.200",
                    "lastTransitionTime": "2026-12-04T10:00:01Z"
                }]
            }
        })
    }

    #[test]
    fn decodes_the_same_service_without_the_field_sets() {
        let full: Service = serde_json::from_value(service_json()).unwrap();
        let lean: LeanService = serde_json::from_value(service_json()).unwrap();
        let mut expected = full.clone();
        for entry in expected.metadata.managed_fields.iter_mut().flatten() {
            assert!(entry.fields_v1.is_some(), "the full decode keeps fieldsV1");
            entry.fields_v1 = None;
        }
        assert_eq!(lean.0, expected);
        let managers: Vec<_> = lean
            .0
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .map(|m| (m.manager.as_deref(), m.subresource.as_deref()))
            .collect();
        assert_eq!(
            managers,
            [
                (Some("kubectl"), None),
                (Some("ferrolb-controller"), Some("status"))
            ]
        );
    }

    #[test]
    fn decodes_a_service_without_metadata_spec_or_status() {
        let lean: LeanService = serde_json::from_value(json!({})).unwrap();
        assert_eq!(lean.0, Service::default());
    }

    #[test]
    fn rejects_a_malformed_field_naming_it() {
        let mut v = service_json();
        v["metadata"]["managedFields"][0]["manager"] = json!(7);
        let err = serde_json::from_value::<LeanService>(v).unwrap_err();
        assert!(
            err.to_string().contains("invalid type: integer `7`"),
            "{err}"
        );
    }

    #[test]
    fn is_the_services_resource() {
        use kube::Resource;
        assert_eq!(LeanService::kind(&()), "Service");
        assert_eq!(LeanService::plural(&()), "services");
        assert_eq!(LeanService::api_version(&()), "v1");
        let url = LeanService::url_path(&(), Some("shop"));
        assert_eq!(url, "/api/v1/namespaces/shop/services");
    }
}
