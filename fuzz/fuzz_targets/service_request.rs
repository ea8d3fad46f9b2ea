//! Any text as a Service's request annotations and `spec.loadBalancerIP`: read into a request
//! or refused with an error naming the annotation, never a panic. Lines of the input are, in
//! order: loadBalancerIPs, address-pool, allow-shared-ip, spec.loadBalancerIP, and the MetalLB
//! spelling of loadBalancerIPs; an absent line leaves that input unset.
#![no_main]

use std::collections::BTreeMap;

use ferrolb_controller::ipam::request::{Handling, read_service};
use ferrolb_crds::contract::annotation::{
    ADDRESS_POOL, ALLOW_SHARED_IP, LOAD_BALANCER_IPS, LOAD_BALANCER_IPS_SUFFIX, REQUEST_PREFIXES,
};
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let mut lines = text.split('\n');
    let mut annotations = BTreeMap::new();
    for name in [LOAD_BALANCER_IPS, ADDRESS_POOL, ALLOW_SHARED_IP] {
        if let Some(value) = lines.next() {
            annotations.insert(name.to_string(), value.to_string());
        }
    }
    let field = lines.next().map(str::to_string);
    if let Some(value) = lines.next() {
        annotations.insert(format!("{}{LOAD_BALANCER_IPS_SUFFIX}", REQUEST_PREFIXES[1]), value.to_string());
    }
    let svc = Service {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("fuzz".into()),
            namespace: Some("default".into()),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            cluster_ip: Some("198.18.0.10".into()),
            ip_families: Some(vec!["IPv4".into(), "IPv6".into()]),
            ip_family_policy: Some("PreferDualStack".into()),
            load_balancer_ip: field,
            ..Default::default()
        }),
        status: None,
    };
    match read_service(&svc, None) {
        Handling::Handled(Ok(request)) => assert!(request.requested.len() <= 2),
        Handling::Handled(Err(e)) => assert!(e.to_string().len() < 1024),
        Handling::NotHandled(_) => unreachable!("a LoadBalancer with a cluster IP is handled"),
    }
});
