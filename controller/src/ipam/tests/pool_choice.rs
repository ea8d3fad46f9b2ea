//! Which pool may serve a Service, and in which order pools are tried.

use super::*;

#[test]
fn auto_assign_false_pools_serve_only_who_names_them_or_requests_inside() {
    let mut manual = pool("manual", &["203.0.113.0/30"]);
    manual.auto_assign = false;
    let mut a = with_pools(vec![manual]);
    let err = error(&mut a, "a", &v4());
    assert_eq!(err.reason(), reason::NO_POOL_MATCHES);
    assert_says(&err, "pool manual autoAssign is false");
    let named = Request {
        pool: Some("manual".into()),
        ..v4()
    };
    assert_eq!(got(&mut a, "b", &named).0, "manual");
    let requested = Request {
        requested: ips(&["203.0.113.3"]),
        ..v4()
    };
    assert_eq!(got(&mut a, "c", &requested).1, ips(&["203.0.113.3"]));
}

#[test]
fn named_pool_is_the_only_candidate_and_a_missing_one_is_reported() {
    let mut a = with_pools(vec![
        pool("a", &["203.0.113.0/30"]),
        pool("b", &["203.0.113.4/30"]),
    ]);
    let named = Request {
        pool: Some("b".into()),
        ..v4()
    };
    assert_eq!(
        got(&mut a, "x", &named),
        ("b".into(), ips(&["203.0.113.4"]))
    );
    let missing = Request {
        pool: Some("c".into()),
        ..v4()
    };
    assert_eq!(
        error(&mut a, "y", &missing).to_string(),
        format!(
            "annotation {} names pool c, which does not exist (pools: a, b)",
            annotation::ADDRESS_POOL
        )
    );
}

#[test]
fn priority_lowest_positive_first_unset_last_then_name() {
    let mut p3 = pool("p3", &["203.0.113.30/32"]);
    p3.allocation = allocation(|s| s.priority = Some(3));
    let mut p1 = pool("p1", &["203.0.113.10/32"]);
    p1.allocation = allocation(|s| s.priority = Some(1));
    let mut zero = pool("a-zero", &["203.0.113.40/32"]);
    zero.allocation = allocation(|s| s.priority = Some(0));
    let plain = pool("a-plain", &["203.0.113.50/32"]);
    let mut a = with_pools(vec![plain, zero, p3, p1]);
    let order: Vec<_> = (0..4)
        .map(|i| got(&mut a, &format!("s{i}"), &v4()).0)
        .collect();
    assert_eq!(order, ["p1", "p3", "a-zero", "a-plain"]);
}

#[test]
fn service_allocation_must_select_namespace_and_service() {
    let mut restricted = pool("team", &["203.0.113.0/30"]);
    restricted.allocation = allocation(|s| {
        s.namespaces = vec!["ns".into()];
        s.namespace_selectors = vec![LabelSelector {
            match_labels: BTreeMap::from([("team".into(), "a".into())]),
            ..Default::default()
        }];
        s.service_selectors = vec![LabelSelector {
            match_labels: BTreeMap::from([("tier".into(), "edge".into())]),
            ..Default::default()
        }];
    });
    let mut a = with_pools(vec![restricted]);
    let edge = Request {
        labels: BTreeMap::from([("tier".into(), "edge".into())]),
        ..v4()
    };
    let team_a = BTreeMap::from([("team".to_string(), "a".to_string())]);
    // Wrong namespace labels.
    let err = a
        .assign(&key("s"), &edge, &no_labels(), &[])
        .result
        .unwrap_err();
    assert!(
        matches!(&*err, AllocationError::NoPoolMatches(r) if r[0].1 == RuledOut::NamespaceNotSelected("ns".into())),
        "{err}"
    );
    // Wrong Service labels.
    let err = failed(a.assign(&key("s"), &v4(), &team_a, &[])).0;
    assert_says(&err, "serviceSelectors match no labels");
    // Wrong namespace.
    let other_ns = ServiceKey::new("other", "s");
    let err = failed(a.assign(&other_ns, &edge, &team_a, &[])).0;
    assert_says(&err, "does not list \"other\"");
    // Everything matches.
    assert!(a.assign(&key("s"), &edge, &team_a, &[]).result.is_ok());
}

#[test]
fn restricted_pool_never_serves_unselected_even_when_named() {
    let mut restricted = pool("team", &["203.0.113.0/30"]);
    restricted.allocation = allocation(|s| s.namespaces = vec!["elsewhere".into()]);
    let mut a = with_pools(vec![restricted]);
    let named = Request {
        pool: Some("team".into()),
        ..v4()
    };
    assert_eq!(error(&mut a, "s", &named).reason(), reason::NO_POOL_MATCHES);
}

#[test]
fn selected_restricted_pools_win_and_others_fall_back_to_unrestricted() {
    let mut restricted = pool("z-team", &["203.0.113.0/30"]);
    restricted.allocation = allocation(|s| s.namespaces = vec!["ns".into()]);
    let open = pool("a-open", &["198.51.100.0/30"]);
    let mut a = with_pools(vec![open, restricted]);
    assert_eq!(got(&mut a, "s", &v4()).0, "z-team");
    let elsewhere = ServiceKey::new("other", "s");
    let (o, _) = ok(a.assign(&elsewhere, &v4(), &no_labels(), &[]));
    assert_eq!(&*o.pool, "a-open");
}

#[test]
fn overlapping_pools_older_wins_and_no_address_is_given_twice() {
    let mut older = pool("older", &["203.0.113.0/30"]);
    older.created = 1;
    let mut newer = pool("newer", &["203.0.113.2-203.0.113.9"]);
    newer.created = 2;
    let mut a = with_pools(vec![newer, older]);
    assert_eq!(a.pools().map(|p| p.name()).collect::<Vec<_>>(), ["older"]);
    assert!(a.problems()["newer"].contains("older pool (older) keeps it"));
    let named = Request {
        pool: Some("newer".into()),
        ..v4()
    };
    assert_says(&error(&mut a, "s", &named), "is not in use");
}
