//! Reading Services into requests: handling, families, requested addresses, malformed input.

use super::*;
use ferrolb_crds::contract::annotation::{ADDRESS_POOL, ALLOW_SHARED_IP, LOAD_BALANCER_IPS};
use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
use kube::api::ObjectMeta;

fn svc(edit: impl FnOnce(&mut ServiceSpec, &mut BTreeMap<String, String>)) -> Service {
    let mut spec = ServiceSpec {
        type_: Some("LoadBalancer".into()),
        cluster_ip: Some("198.18.0.10".into()),
        ip_families: Some(vec!["IPv4".into()]),
        ports: Some(vec![ServicePort {
            port: 80,
            ..Default::default()
        }]),
        ..Default::default()
    };
    let mut annotations = BTreeMap::new();
    edit(&mut spec, &mut annotations);
    Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("shop".into()),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The request of a Service with `annotations` (and nothing else unusual).
fn annotated(annotations: &[(&str, &str)]) -> Result<Request, RequestError> {
    request(&svc(|_, a| {
        for (name, value) in annotations {
            a.insert(name.to_string(), value.to_string());
        }
    }))
}

fn request(s: &Service) -> Result<Request, RequestError> {
    match read_service(s, None) {
        Handling::Handled(r) => r,
        other => panic!("not handled: {other:?}"),
    }
}

#[test]
fn only_load_balancers_with_a_cluster_ip_and_our_class_are_handled() {
    let cluster_ip = svc(|s, _| s.type_ = Some("ClusterIP".into()));
    assert_eq!(
        read_service(&cluster_ip, None),
        Handling::NotHandled(NotHandled::NotLoadBalancer)
    );
    let headless = svc(|s, _| s.cluster_ip = Some("None".into()));
    assert_eq!(
        read_service(&headless, None),
        Handling::NotHandled(NotHandled::NoClusterIp)
    );
    let classed = svc(|s, _| s.load_balancer_class = Some("example.com/lb".into()));
    assert_eq!(
        read_service(&classed, None),
        Handling::NotHandled(NotHandled::OtherClass)
    );
    assert!(matches!(
        read_service(&classed, Some("example.com/lb")),
        Handling::Handled(Ok(_))
    ));
    assert_eq!(
        read_service(&svc(|_, _| {}), Some("example.com/lb")),
        Handling::NotHandled(NotHandled::OtherClass)
    );
}

#[test]
fn families_follow_policy() {
    let single = request(&svc(|s, _| {
        s.ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
    }))
    .unwrap();
    assert_eq!(single.families, vec![Family::V6].into());
    assert_eq!(single.policy, FamilyPolicy::SingleStack);
    let dual = request(&svc(|s, _| {
        s.ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
        s.ip_family_policy = Some("RequireDualStack".into());
    }))
    .unwrap();
    assert_eq!(dual.families, vec![Family::V6, Family::V4].into());
    assert_eq!(dual.policy, FamilyPolicy::RequireDualStack);
    let undefaulted = request(&svc(|s, _| {
        s.ip_families = None;
        s.cluster_ip = Some("2001:db8:ffff::5".into());
    }))
    .unwrap();
    assert_eq!(undefaulted.families, vec![Family::V6].into());
}

#[test]
fn requested_addresses_from_field_or_any_annotation_spelling() {
    let field = request(&svc(|s, _| s.load_balancer_ip = Some("203.0.113.5".into()))).unwrap();
    assert_eq!(
        field.requested,
        vec!["203.0.113.5".parse::<IpAddr>().unwrap()]
    );
    for prefix in REQUEST_PREFIXES {
        let r = request(&svc(|s, a| {
            s.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
            s.ip_family_policy = Some("PreferDualStack".into());
            a.insert(
                format!("{prefix}{LOAD_BALANCER_IPS_SUFFIX}"),
                "2001:db8::5, 203.0.113.5".into(),
            );
        }))
        .unwrap();
        assert_eq!(
            r.requested,
            vec![
                "203.0.113.5".parse::<IpAddr>().unwrap(),
                "2001:db8::5".parse().unwrap()
            ],
            "{prefix}"
        );
    }
}

#[test]
fn malformed_requests_name_the_annotation_and_value() {
    let both = request(&svc(|s, a| {
        s.load_balancer_ip = Some("203.0.113.5".into());
        a.insert(LOAD_BALANCER_IPS.into(), "203.0.113.6".into());
    }))
    .unwrap_err();
    assert_eq!(
        both.to_string(),
        format!(
            "spec.loadBalancerIP \"203.0.113.5\" and annotation {LOAD_BALANCER_IPS}=\"203.0.113.6\" are both set; keep only the annotation"
        )
    );
    let garbage = annotated(&[("metallb.io/loadBalancerIPs", "203.0.113.5,nope")]).unwrap_err();
    assert_eq!(
        garbage.to_string(),
        "annotation metallb.io/loadBalancerIPs: \"nope\" is not an IP address"
    );
    let two = annotated(&[(LOAD_BALANCER_IPS, "203.0.113.5,203.0.113.6")]).unwrap_err();
    assert!(matches!(
        two,
        RequestError::TwoOfFamily {
            family: Family::V4,
            ..
        }
    ));
    assert!(two.to_string().contains("at most one per family"));
    let wrong_family = annotated(&[(LOAD_BALANCER_IPS, "2001:db8::5")]).unwrap_err();
    assert_eq!(
        wrong_family.to_string(),
        format!(
            "annotation {LOAD_BALANCER_IPS} requests 2001:db8::5, an IPv6 address, but spec.ipFamilies is [IPv4]"
        )
    );
    let disagree = annotated(&[
        (ADDRESS_POOL, "a"),
        ("metallb.universe.tf/address-pool", "b"),
    ])
    .unwrap_err();
    assert!(matches!(
        disagree,
        RequestError::ConflictingSpellings { .. }
    ));
    let agree = annotated(&[(ADDRESS_POOL, "a"), ("metallb.io/address-pool", " a ")]).unwrap();
    assert_eq!(agree.pool.as_deref(), Some("a"));
    let empty = annotated(&[(ALLOW_SHARED_IP, " ")]).unwrap_err();
    assert_eq!(
        empty,
        RequestError::Empty(format!("annotation {ALLOW_SHARED_IP}"))
    );
}

#[test]
fn sharing_inputs_ports_and_backends() {
    let r = request(&svc(|s, a| {
        a.insert("metallb.universe.tf/allow-shared-ip".into(), "k".into());
        s.ports = Some(vec![
            ServicePort {
                port: 53,
                protocol: Some("UDP".into()),
                ..Default::default()
            },
            ServicePort {
                port: 53,
                ..Default::default()
            },
        ]);
        s.external_traffic_policy = Some("Local".into());
        s.selector = Some(BTreeMap::from([("app".into(), "dns".into())]));
    }))
    .unwrap();
    assert_eq!(r.sharing_key.as_deref(), Some("k"));
    assert_eq!(
        r.ports.iter().map(Port::to_string).collect::<Vec<_>>(),
        ["53/TCP", "53/UDP"]
    );
    assert_eq!(
        r.backends,
        Backends::Local(BTreeMap::from([("app".into(), "dns".into())]))
    );
}

#[test]
fn every_kubernetes_protocol_is_read_and_an_unknown_one_is_named() {
    let r = request(&svc(|s, _| {
        s.ports = Some(
            ["SCTP", "UDP", "TCP"]
                .map(|p| ServicePort {
                    port: 9,
                    protocol: Some(p.into()),
                    ..Default::default()
                })
                .into(),
        );
    }))
    .unwrap();
    assert_eq!(
        r.ports.iter().map(Port::to_string).collect::<Vec<_>>(),
        ["9/TCP", "9/UDP", "9/SCTP"]
    );
    let unknown = request(&svc(|s, _| {
        s.ports.as_mut().unwrap().push(ServicePort {
            port: 9,
            protocol: Some("tcp".into()),
            ..Default::default()
        });
    }))
    .unwrap_err();
    assert_eq!(
        unknown.to_string(),
        "spec.ports[1].protocol: \"tcp\" is not TCP, UDP or SCTP"
    );
}

#[test]
fn strict_text_rules_apply_to_every_request_annotation_and_field() {
    // The filed case: a trailing empty element is no longer one address.
    let trailing = annotated(&[(LOAD_BALANCER_IPS, "198.51.100.201,,")]).unwrap_err();
    assert_eq!(
        trailing.to_string(),
        format!(
            "annotation {LOAD_BALANCER_IPS} has an empty element in \"198.51.100.201,,\": \
             separate entries with single commas, with none at the end"
        )
    );
    // The same address twice, in two spellings.
    let twice = request(&svc(|s, a| {
        s.ip_families = Some(vec!["IPv6".into()]);
        a.insert(
            LOAD_BALANCER_IPS.into(),
            "2001:db8::1, 2001:DB8:0::1".into(),
        );
    }))
    .unwrap_err();
    assert!(
        matches!(&twice, RequestError::Duplicate { element, .. } if element == "2001:db8::1"),
        "{twice}"
    );
    let semicolons = annotated(&[(LOAD_BALANCER_IPS, "198.51.100.1;2001:db8::1")]).unwrap_err();
    assert!(matches!(
        semicolons,
        RequestError::WrongSeparator { separator: ';', .. }
    ));
    let tab = annotated(&[(ADDRESS_POOL, "lan\t")]).unwrap_err();
    assert!(matches!(
        tab,
        RequestError::BadCharacter {
            character: '\t',
            ..
        }
    ));
    assert!(
        tab.to_string()
            .starts_with(&format!("annotation {ADDRESS_POOL} holds"))
    );
    let key = annotated(&[(ALLOW_SHARED_IP, &"k".repeat(300))]).unwrap_err();
    assert!(matches!(key, RequestError::TooLong { len: 300, .. }));
    let pool = annotated(&[("metallb.io/address-pool", "My_Pool")]).unwrap_err();
    assert_eq!(
        pool.to_string(),
        "annotation metallb.io/address-pool: \"My_Pool\" is not a pool name (lowercase letters, \
         digits, '-' and '.', starting and ending with a letter or digit)"
    );
    let field = request(&svc(|s, _| {
        s.load_balancer_ip = Some("203.0.113.5\u{200b}".into());
    }))
    .unwrap_err();
    assert!(
        field
            .to_string()
            .starts_with("spec.loadBalancerIP holds '\\u{200b}' (U+200B)"),
        "{field}"
    );
    // Well-formed values with spaces around entries still pass.
    let ok = request(&svc(|s, a| {
        s.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
        s.ip_family_policy = Some("RequireDualStack".into());
        a.insert(
            LOAD_BALANCER_IPS.into(),
            " 203.0.113.5, 2001:db8::5 ".into(),
        );
        a.insert(ADDRESS_POOL.into(), "lan-2".into());
    }))
    .unwrap();
    assert_eq!(ok.requested.len(), 2);
    assert_eq!(ok.pool.as_deref(), Some("lan-2"));
}

/// Found by the `service_request` fuzz target: two spellings disagreeing, one of them long,
/// made a message as long as the value.
#[test]
fn messages_stay_short_whatever_the_values() {
    let long = format!("2b:{}", "\0".repeat(5000));
    let disagree = annotated(&[
        (LOAD_BALANCER_IPS, ""),
        ("metallb.io/loadBalancerIPs", &long),
    ])
    .unwrap_err();
    assert!(matches!(
        disagree,
        RequestError::ConflictingSpellings { .. }
    ));
    assert!(disagree.to_string().len() < 300, "{disagree}");
    let both = request(&svc(|s, a| {
        s.load_balancer_ip = Some("9".repeat(5000));
        a.insert(LOAD_BALANCER_IPS.into(), "8".repeat(5000));
    }))
    .unwrap_err();
    assert!(both.to_string().len() < 300, "{both}");
}

#[test]
fn a_pools_class_annotation_follows_the_same_text_rules() {
    use ferrolb_crds::IPAddressPool;
    use ferrolb_crds::contract::annotation::POOL_LOAD_BALANCER_CLASS;
    let pool = |class: Option<&str>| {
        let mut p: IPAddressPool = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"}, "spec": {"addresses": ["203.0.113.0/30"]},
        }))
        .unwrap();
        if let Some(class) = class {
            p.metadata.annotations =
                Some([(POOL_LOAD_BALANCER_CLASS.to_string(), class.to_string())].into());
        }
        p
    };
    assert_eq!(pool_class(&pool(None)), Ok(None));
    assert_eq!(
        pool_class(&pool(Some("example.com/lb"))),
        Ok(Some("example.com/lb"))
    );
    assert_eq!(
        pool_class(&pool(Some(" example.com/lb "))),
        Ok(Some("example.com/lb"))
    );
    let err = pool_class(&pool(Some("example.com/lb\u{a0}"))).unwrap_err();
    assert!(matches!(
        err,
        RequestError::BadCharacter {
            character: '\u{a0}',
            ..
        }
    ));
    assert_eq!(
        pool_class(&pool(Some(""))),
        Err(RequestError::Empty(format!(
            "annotation {POOL_LOAD_BALANCER_CLASS}"
        )))
    );
}
