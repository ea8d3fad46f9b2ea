//! [`ServiceKey`]: a Service by namespace and name, the one key the controller, the speaker and
//! the tests index Services by.

use std::fmt;

use k8s_openapi::api::core::v1::Service;

/// A Service, by namespace and name. Displays as `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ServiceKey {
    /// The key of `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ServiceKey {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of `svc` (empty parts where its metadata lacks them).
    pub fn of(svc: &Service) -> ServiceKey {
        ServiceKey::new(
            svc.metadata.namespace.clone().unwrap_or_default(),
            svc.metadata.name.clone().unwrap_or_default(),
        )
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn displays_and_orders_by_namespace_then_name() {
        let a = ServiceKey::new("a", "z");
        let b = ServiceKey::new("b", "a");
        assert_eq!(a.to_string(), "a/z");
        assert!(a < b);
        let svc = Service {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some("web".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(ServiceKey::of(&svc), ServiceKey::new("ns", "web"));
    }
}
