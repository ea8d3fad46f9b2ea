//! [`ServiceKey`]: a Service by namespace and name, the one key the controller, the speaker and
//! the tests index Services by.

use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::core::v1::Service;

/// A Service, by namespace and name. Displays as, and parses from, `namespace/name`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

impl FromStr for ServiceKey {
    type Err = String;

    /// `namespace/name`, both parts non-empty.
    fn from_str(s: &str) -> Result<ServiceKey, String> {
        match s.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
                Ok(ServiceKey::new(namespace, name))
            }
            _ => Err(format!("{s:?} is not namespace/name")),
        }
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

    #[test]
    fn parses_what_it_displays() {
        let key: ServiceKey = "ns/web".parse().unwrap();
        assert_eq!(key, ServiceKey::new("ns", "web"));
        assert_eq!(key.to_string().parse::<ServiceKey>().unwrap(), key);
        for bad in ["web", "/web", "ns/", ""] {
            assert!(bad.parse::<ServiceKey>().is_err(), "{bad:?}");
        }
    }
}
