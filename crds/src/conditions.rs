//! Reading a condition off a Service: the one lookup the controller, the speaker and the tests
//! use for ferrolb's conditions (their types are in [`crate::contract::condition`]).

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
}
