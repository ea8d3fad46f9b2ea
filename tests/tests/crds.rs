//! The CRDs on a real apiserver: they become Established, print useful columns, accept valid
//! pools and refuse bad ones with a message naming the field; the CEL rules and the Rust parser
//! agree entry by entry.

use ferrolb_crds::address::{AddressError, parse_entry};
use ferrolb_tests::control_plane::{self, ControlPlane};

/// `kubectl apply` of one manifest; Ok(stdout) or Err(kubectl's message).
fn apply(cp: &ControlPlane, manifest: &str) -> Result<String, String> {
    cp.kubectl_apply(manifest).map_err(|e| format!("{e:#}"))
}

fn pool(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {name}\nspec:\n{spec}\n"
    )
}

fn pool_with_addresses(name: &str, addresses: &[&str]) -> String {
    let list: Vec<String> = addresses.iter().map(|a| format!("  - {:?}", a)).collect();
    pool(name, &format!("  addresses:\n{}", list.join("\n")))
}

#[test]
fn crds_are_established_and_pools_list_with_their_columns() {
    let cp = control_plane::shared_with_crds();
    let name = control_plane::unique_name("columns");
    apply(
        cp,
        &pool_with_addresses(
            &name,
            &["198.51.100.200-198.51.100.250", "2001:db8:1::100/120"],
        ),
    )
    .unwrap();
    let out = cp.kubectl_run(&["get", "ipaddresspools", &name]).unwrap();
    let header = out.lines().next().unwrap();
    for col in [
        "NAME",
        "ADDRESSES",
        "AUTO ASSIGN",
        "ASSIGNED IPV4",
        "AVAILABLE IPV4",
        "ASSIGNED IPV6",
        "AVAILABLE IPV6",
        "AGE",
    ] {
        assert!(header.contains(col), "column {col} missing: {header}");
    }
    let row = out.lines().nth(1).unwrap();
    assert!(
        row.contains("198.51.100.200-198.51.100.250") && row.contains("true"),
        "defaulted autoAssign shows: {row}"
    );
    // Short names and the category resolve too.
    assert!(
        cp.kubectl_run(&["get", "ippool", &name, "-o", "name"])
            .unwrap()
            .contains(&name)
    );
    assert!(
        cp.kubectl_run(&["get", "ferrolb", "-o", "name"])
            .unwrap()
            .contains(&name)
    );
    let crds = cp.kubectl_run(&["get", "crd", "-o", "name"]).unwrap();
    assert!(
        crds.contains("ipaddresspools.ferrolb.io") && crds.contains("l2advertisements.ferrolb.io")
    );
}

#[test]
fn valid_pools_are_accepted() {
    let cp = control_plane::shared_with_crds();
    for addresses in [
        &["198.51.100.0/24"][..],
        &["198.51.100.10-198.51.100.20"],
        &["198.51.100.10 - 198.51.100.20"],
        &["203.0.113.7"],
        &["2001:db8:1::/64"],
        &["2001:db8:1::10-2001:db8:1::ff"],
        &["2001:db8::7"],
        &[
            "198.51.100.0/28",
            "2001:db8:2::/64",
            "203.0.113.5",
            "203.0.113.10-203.0.113.20",
        ],
        &["0.0.0.0/0"],
        &["198.51.100.9-198.51.100.9"],
    ] {
        let name = control_plane::unique_name("valid");
        apply(cp, &pool_with_addresses(&name, addresses))
            .unwrap_or_else(|e| panic!("{addresses:?} refused: {e}"));
    }
    let name = control_plane::unique_name("full");
    apply(
        cp,
        &pool(
            &name,
            "  addresses: [\"198.51.100.64/26\"]\n  autoAssign: false\n  avoidBuggyIPs: true\n  serviceAllocation:\n    priority: 10\n    namespaces: [\"team-a\"]\n    namespaceSelectors:\n    - matchLabels: {team: a}\n    serviceSelectors:\n    - matchExpressions:\n      - {key: tier, operator: In, values: [edge]}\n      - {key: legacy, operator: DoesNotExist}",
        ),
    )
    .unwrap();
}

/// Address entries: the apiserver (CEL) and the Rust parser must agree, word for word where the
/// Rust message is one CEL can produce.
#[test]
fn apiserver_and_parser_agree_on_every_address_entry() {
    let cp = control_plane::shared_with_crds();
    let cases = [
        "hello",
        "",
        "198.51.100",
        "198.51.100.256",
        "198.51.100.20-198.51.100.10",
        "2001:db8::ff-2001:db8::1",
        "2001:db8:1:2::-2001:db8:1:1:ffff::",
        "198.51.100.1-2001:db8::1",
        "198.51.100.0/33",
        "2001:db8::/129",
        "198.51.100.1/24",
        "2001:db8:1::5/64",
        "198.51.100.1-foo",
        "198.51.100.0/024",
        "fe80::1%eth0",
        "01.2.3.4",
        "198.51.100.2-198.51.100.10",
        "198.51.100.99-198.51.100.100",
        "2001:db8::9-2001:db8::10",
        "::1-::2",
        "::-::ffff",
        "2001:db8:0:0:1::-2001:db8::1:0:0:0",
        "2001:DB8::1-2001:db8::2",
        "198.51.100.128-198.51.100.127",
        "0.0.0.0-255.255.255.255",
        "255.255.255.255-0.0.0.0",
        "ffff::-::1",
        "::ffff:198.51.100.1",
        "::ffff:c633:6401",
        "::198.51.100.1",
        "198.51.100.0/25",
        "198.51.100.128/25",
        "198.51.100.64/25",
        "2001:db8:1:8000::/65",
        "2001:db8:1:4000::/65",
    ];
    for (i, entry) in cases.iter().enumerate() {
        let name = format!("{}-{i}", control_plane::unique_name("agree"));
        let parsed = parse_entry(entry);
        let applied = apply(cp, &pool_with_addresses(&name, &["203.0.113.0/24", entry]));
        match (&parsed, &applied) {
            (Ok(_), Ok(_)) => {}
            (Err(e), Err(msg)) => {
                assert!(
                    msg.contains("spec.addresses[1]"),
                    "{entry:?}: error does not name the field: {msg}"
                );
                // CEL cannot print a computed IPv6 address within its cost budget, so for IPv6
                // host bits the apiserver names the bits to clear instead of the network.
                let expected = match e {
                    AddressError::HostBitsSet { written, .. } if written.contains(':') => format!(
                        "\"{written}\" has host bits set; the network address is the address with every bit after /"
                    ),
                    _ => e.to_string(),
                };
                assert!(
                    msg.contains(&expected),
                    "{entry:?}: apiserver says\n{msg}\nparser says\n{e}"
                );
            }
            _ => panic!("{entry:?}: parser says {parsed:?}, apiserver says {applied:?}"),
        }
    }
}

#[test]
fn bad_pools_are_refused_with_a_message_naming_the_field() {
    let cp = control_plane::shared_with_crds();
    let bad: &[(&str, String, &[&str])] = &[
        ("empty address list", pool("x", "  addresses: []"), &["spec.addresses", "at least 1"]),
        ("no addresses", pool("x", "  autoAssign: true"), &["spec.addresses", "Required value"]),
        ("garbage", pool_with_addresses("x", &["hello"]), &["spec.addresses[0]", "\"hello\" is not an IP address"]),
        ("reversed IPv4 range", pool_with_addresses("x", &["198.51.100.20-198.51.100.10"]), &["spec.addresses[0]", "is after its end"]),
        ("reversed IPv6 range", pool_with_addresses("x", &["2001:db8::ff-2001:db8::1"]), &["spec.addresses[0]", "is after its end"]),
        ("range mixing families", pool_with_addresses("x", &["198.51.100.1-2001:db8::1"]), &["spec.addresses[0]", "mixes IPv4 and IPv6"]),
        ("IPv4 prefix too long", pool_with_addresses("x", &["198.51.100.0/33"]), &["spec.addresses[0]", "out of range for IPv4 (0 to 32)"]),
        ("IPv6 prefix too long", pool_with_addresses("x", &["2001:db8::/129"]), &["spec.addresses[0]", "out of range for IPv6 (0 to 128)"]),
        ("IPv4 host bits", pool_with_addresses("x", &["198.51.100.1/24"]), &["spec.addresses[0]", "the network address is 198.51.100.0/24"]),
        ("IPv6 host bits", pool_with_addresses("x", &["2001:db8:1::5/64"]), &["spec.addresses[0]", "every bit after /64 cleared"]),
        ("range with a bad end", pool_with_addresses("x", &["198.51.100.1-foo"]), &["spec.addresses[0]", "must be two IP addresses"]),
        ("second entry bad", pool_with_addresses("x", &["198.51.100.0/28", "198.51.100.300"]), &["spec.addresses[1]"]),
        ("negative priority", pool("x", "  addresses: [\"198.51.100.0/28\"]\n  serviceAllocation:\n    priority: -1"), &["spec.serviceAllocation.priority", "greater than or equal to 0"]),
        ("bad namespace name", pool("x", "  addresses: [\"198.51.100.0/28\"]\n  serviceAllocation:\n    namespaces: [\"Team_A\"]"), &["spec.serviceAllocation.namespaces[0]", "is not a namespace name"]),
        ("unknown selector operator", pool("x", "  addresses: [\"198.51.100.0/28\"]\n  serviceAllocation:\n    serviceSelectors:\n    - matchExpressions: [{key: a, operator: Foo, values: [b]}]"), &["spec.serviceAllocation.serviceSelectors[0].matchExpressions[0].operator", "Unsupported value"]),
        ("In without values", pool("x", "  addresses: [\"198.51.100.0/28\"]\n  serviceAllocation:\n    namespaceSelectors:\n    - matchExpressions: [{key: a, operator: In}]"), &["spec.serviceAllocation.namespaceSelectors[0].matchExpressions[0].values", "needs at least one value"]),
        ("Exists with values", pool("x", "  addresses: [\"198.51.100.0/28\"]\n  serviceAllocation:\n    namespaceSelectors:\n    - matchExpressions: [{key: a, operator: Exists, values: [b]}]"), &["matchExpressions[0].values", "takes no values"]),
        ("autoAssign not a boolean", pool("x", "  addresses: [\"198.51.100.0/28\"]\n  autoAssign: \"yes\""), &["spec.autoAssign", "boolean"]),
        ("misspelt field", pool("x", "  addresses: [\"198.51.100.0/28\"]\n  autoassign: false"), &["unknown field \"spec.autoassign\""]),
        ("bad interface name", "apiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: x\nspec:\n  interfaces: [\"eth0/1\"]\n".to_string(), &["spec.interfaces[0]", "is not a Linux interface name"]),
        ("bad pool reference", "apiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: x\nspec:\n  ipAddressPools: [\"Bad_Pool\"]\n".to_string(), &["spec.ipAddressPools[0]", "is not an IPAddressPool name"]),
        ("bad node selector", "apiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: x\nspec:\n  nodeSelectors:\n  - matchExpressions: [{key: zone, operator: NotIn, values: []}]\n".to_string(), &["spec.nodeSelectors[0].matchExpressions[0].values", "needs at least one value"]),
    ];
    assert!(bad.len() >= 12);
    for (what, manifest, expected) in bad {
        let name = control_plane::unique_name("bad");
        let manifest = manifest.replace("name: x\n", &format!("name: {name}\n"));
        let err = apply(cp, &manifest).expect_err(&format!("{what}: the apiserver accepted it"));
        for needle in *expected {
            assert!(
                err.contains(needle),
                "{what}: expected {needle:?} in:\n{err}"
            );
        }
        // Strict decoding (unknown fields) fails before the object is read, so names no object.
        assert!(
            err.contains(&name) || err.contains("strict decoding error"),
            "{what}: error names the object: {err}"
        );
    }
}
