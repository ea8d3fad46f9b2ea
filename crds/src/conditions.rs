//! Reading a Service's status: a condition (the one lookup the controller, the speaker, the
//! plugin and the tests use for ferrolb's conditions, whose types are in
//! [`crate::contract::condition`]) and the ingress addresses, as written.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// The condition of type `type_` in `svc.status.conditions`, if there is one.
pub fn service_condition<'a>(svc: &'a Service, type_: &str) -> Option<&'a Condition> {
    svc.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// `svc.status.loadBalancer.ingress[].ip`, in order, as written (unparsed).
pub fn ingress_ips(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceStatus;

    #[test]
    fn finds_the_condition_by_type() {
        let condition = |type_: &str| Condition {
            type_: type_.into(),
            status: "True".into(),
            reason: "Test".into(),
            message: String::new(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        };
        let svc = Service {
            status: Some(ServiceStatus {
                conditions: Some(vec![condition("a"), condition("b")]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(service_condition(&svc, "b").unwrap().type_, "b");
        assert!(service_condition(&svc, "c").is_none());
        assert!(service_condition(&Service::default(), "a").is_none());
    }

    #[test]
    fn ingress_ips_are_listed_in_order_skipping_hostnames() {
        use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus};
        let ingress = |ip: Option<&str>, hostname: Option<&str>| LoadBalancerIngress {
            ip: ip.map(String::from),
            hostname: hostname.map(String::from),
            ..Default::default()
        };
        let svc = Service {
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![
                        ingress(Some("2001:db8::1"), None),
                        ingress(None, Some("lb.example")),
                        ingress(Some("198.51.100.1"), None),
                    ]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(ingress_ips(&svc), ["2001:db8::1", "198.51.100.1"]);
        assert!(ingress_ips(&Service::default()).is_empty());
    }
}
