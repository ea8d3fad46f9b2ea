//! The BGP CRDs (`BGPPeer`, `BGPAdvertisement`, `Community`, `BFDProfile`) on a real
//! apiserver: MetalLB's documented manifests apply with only `apiVersion` changed, and bad
//! values are refused with a message naming the field.

use ferrolb_tests::control_plane::{self, ControlPlane};

fn apply(cp: &ControlPlane, manifest: &str) -> Result<String, String> {
    cp.kubectl_apply(manifest).map_err(|e| format!("{e:#}"))
}

/// MetalLB's manifest with `apiVersion` switched to ferrolb's, `metadata.namespace` kept.
fn from_metallb(manifest: &str) -> String {
    manifest
        .replace(
            "apiVersion: metallb.io/v1beta2",
            "apiVersion: ferrolb.io/v1beta1",
        )
        .replace(
            "apiVersion: metallb.io/v1beta1",
            "apiVersion: ferrolb.io/v1beta1",
        )
}

/// The BGP examples of MetalLB's configuration docs (addresses moved to documentation ranges),
/// one multi-document stream per kind of example.
const METALLB_EXAMPLES: &[&str] = &[
    // Advertisement configuration: a /32 with localPref and a community, and the covering /24.
    "apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata:
  name: local
  namespace: metallb-system
spec:
  ipAddressPools:
  - first-pool
  aggregationLength: 32
  localPref: 100
  communities:
  - 65535:65282
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata:
  name: external
  namespace: metallb-system
spec:
  ipAddressPools:
  - first-pool
  aggregationLength: 24
",
    // The basic BGP configuration: an advertisement with no spec (every pool, every node, every
    // peer), and the layer-2 one the same way.
    "apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata:
  name: plain
  namespace: metallb-system
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: plain-l2
  namespace: metallb-system
",
    // Limiting peers to certain nodes.
    "apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata:
  name: example
  namespace: metallb-system
spec:
  myASN: 64512
  peerASN: 64512
  peerAddress: 198.51.100.3
  peerPort: 180
  nodeSelectors:
  - matchLabels:
      rack: frontend
    matchExpressions:
    - key: network-speed
      operator: NotIn
      values: [slow]
  - matchExpressions:
    - key: kubernetes.io/hostname
      operator: In
      values: [hostA, hostB]
",
    // Announcing from a subset of nodes.
    "apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata:
  name: example
  namespace: metallb-system
spec:
  ipAddressPools:
  - first-pool
  nodeSelectors:
  - matchLabels:
      kubernetes.io/hostname: NodeA
  - matchLabels:
      kubernetes.io/hostname: NodeB
",
    // Announcing to a subset of peers (the docs' pool and peer names are not valid object
    // names, so lowercase here).
    "apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata:
  name: to-some-peers
  namespace: metallb-system
spec:
  ipAddressPools:
  - pool-a
  peers:
  - peer-a
  - peer-b
",
    // Source address.
    "apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata:
  name: with-source
  namespace: metallb-system
spec:
  myASN: 64512
  peerASN: 64512
  peerAddress: 198.51.100.3
  peerPort: 179
  sourceAddress: 198.51.100.2
  nodeSelectors:
  - matchLabels:
      kubernetes.io/hostname: node-1
",
    // Community aliases, and an advertisement using one.
    "apiVersion: metallb.io/v1beta1
kind: Community
metadata:
  name: communities
  namespace: metallb-system
spec:
  communities:
  - name: vpn-only
    value: 1234:1
  - name: NO_ADVERTISE
    value: 65535:65282
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata:
  name: local-alias
  namespace: metallb-system
spec:
  ipAddressPools:
  - first-pool
  aggregationLength: 32
  localPref: 100
  communities:
  - vpn-only
",
    // Graceful restart.
    "apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata:
  name: with-gr
  namespace: metallb-system
spec:
  myASN: 64512
  peerASN: 64512
  peerAddress: 198.51.100.3
  enableGracefulRestart: true
",
    // BFD (the BGP configuration page's BFD example) and the peer naming the profile.
    "apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata:
  name: testbfdprofile
  namespace: metallb-system
spec:
  receiveInterval: 380
  transmitInterval: 270
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata:
  name: with-bfd
  namespace: metallb-system
spec:
  myASN: 64512
  peerASN: 64513
  peerAddress: 198.51.100.4
  bfdProfile: testbfdprofile
",
    // Timers, a password from a Secret, multihop, dynamic ASN, large communities, IPv6.
    "apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata:
  name: full
  namespace: metallb-system
spec:
  myASN: 4200000001
  dynamicASN: external
  peerAddress: 2001:db8::1
  holdTime: 9s
  keepaliveTime: 3s
  connectTime: 5s
  routerID: 198.51.100.9
  passwordSecret:
    name: bgp-password
    namespace: metallb-system
  ebgpMultiHop: true
  disableMP: true
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata:
  name: v6
  namespace: metallb-system
spec:
  aggregationLengthV6: 64
  communities:
  - large:4200000001:1:2
---
apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata:
  name: full
  namespace: metallb-system
spec:
  receiveInterval: 50
  transmitInterval: 50
  detectMultiplier: 5
  echoInterval: 50
  echoMode: false
  passiveMode: true
  minimumTtl: 250
",
];

#[test]
fn metallb_bgp_manifests_apply_with_only_the_api_version_changed() {
    let cp = control_plane::shared_with_crds();
    for example in METALLB_EXAMPLES {
        let manifest = from_metallb(example);
        apply(cp, &manifest).unwrap_or_else(|e| panic!("refused:\n{manifest}\n{e}"));
    }
    // Read back as the speaker will: every field kept, defaults filled in.
    let peer = cp
        .kubectl_run(&["get", "bgppeer", "example", "-o", "json"])
        .unwrap();
    let peer: ferrolb_crds::BGPPeer = serde_json::from_str(&peer).unwrap();
    assert_eq!(peer.spec.my_asn, 64512);
    assert_eq!(peer.spec.peer_asn, Some(64512));
    assert_eq!(peer.spec.peer_port, 180);
    assert_eq!(peer.spec.node_selectors.len(), 2);
    let full: ferrolb_crds::BGPPeer = serde_json::from_str(
        &cp.kubectl_run(&["get", "bgppeer", "full", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(full.spec.my_asn, 4_200_000_001);
    assert_eq!(
        full.spec.dynamic_asn,
        Some(ferrolb_crds::DynamicAsn::External)
    );
    assert_eq!(full.spec.peer_port, 179, "defaulted");
    assert!(full.spec.disable_mp && full.spec.ebgp_multi_hop);
    let plain: ferrolb_crds::BGPAdvertisement = serde_json::from_str(
        &cp.kubectl_run(&["get", "bgpadvertisement", "plain", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(plain.spec, Default::default(), "spec defaulted to {{}}");
    let columns = cp.kubectl_run(&["get", "bgppeers"]).unwrap();
    for col in ["ADDRESS", "ASN", "MY ASN", "BFD PROFILE"] {
        assert!(columns.contains(col), "column {col}: {columns}");
    }
    assert!(columns.contains("198.51.100.4") && columns.contains("testbfdprofile"));
    let names = cp.kubectl_run(&["get", "ferrolb", "-o", "name"]).unwrap();
    for name in [
        "bgppeer.ferrolb.io/with-gr",
        "bgpadvertisement.ferrolb.io/local-alias",
        "community.ferrolb.io/communities",
        "bfdprofile.ferrolb.io/testbfdprofile",
    ] {
        assert!(
            names.contains(name),
            "{name} in the ferrolb category: {names}"
        );
    }
}

fn peer(spec: &str) -> String {
    format!("apiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata:\n  name: x\nspec:\n{spec}\n")
}

fn advertisement(spec: &str) -> String {
    format!(
        "apiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata:\n  name: x\nspec:\n{spec}\n"
    )
}

fn bfd(spec: &str) -> String {
    format!(
        "apiVersion: ferrolb.io/v1beta1\nkind: BFDProfile\nmetadata:\n  name: x\nspec:\n{spec}\n"
    )
}

const PEER: &str = "  myASN: 64512\n  peerASN: 64513\n  peerAddress: 198.51.100.1";

#[test]
fn bad_bgp_objects_are_refused_with_a_message_naming_the_field() {
    let cp = control_plane::shared_with_crds();
    let with = |extra: &str| peer(&format!("{PEER}\n{extra}"));
    let bad: Vec<(&str, String, &[&str])> = vec![
        ("ASN 0", peer("  myASN: 0\n  peerASN: 1\n  peerAddress: 198.51.100.1"), &["spec.myASN", "greater than or equal to 1"]),
        ("ASN too large", peer("  myASN: 4294967296\n  peerASN: 1\n  peerAddress: 198.51.100.1"), &["spec.myASN", "less than or equal to 4294967295"]),
        ("no peer ASN", peer("  myASN: 64512\n  peerAddress: 198.51.100.1"), &["set exactly one of spec.peerASN", "spec.dynamicASN"]),
        ("both peer ASN forms", with("  dynamicASN: internal"), &["set exactly one of spec.peerASN"]),
        ("bad dynamic ASN", peer("  myASN: 1\n  dynamicASN: sideways\n  peerAddress: 198.51.100.1"), &["spec.dynamicASN", "Unsupported value: \"sideways\""]),
        ("bad peer address", peer("  myASN: 1\n  peerASN: 2\n  peerAddress: router.example"), &["spec.peerAddress", "\"router.example\" is not an IP address"]),
        ("no peer address", peer("  myASN: 1\n  peerASN: 2"), &["spec.peerAddress", "Required value"]),
        ("source of the other family", with("  sourceAddress: 2001:db8::2"), &["spec.sourceAddress", "same family"]),
        ("port 0", with("  peerPort: 0"), &["spec.peerPort", "greater than or equal to 1"]),
        ("hold time 2s", with("  holdTime: 2s"), &["spec.holdTime", "0 (no keepalives) or from 3s to 65535s"]),
        ("hold time not a duration", with("  holdTime: \"90\""), &["spec.holdTime", "\"90\" is not a duration"]),
        ("keepalive not below hold", with("  holdTime: 9s\n  keepaliveTime: 9s"), &["spec.keepaliveTime", "shorter than spec.holdTime"]),
        ("keepalive above the default hold", with("  keepaliveTime: 2m"), &["spec.keepaliveTime", "(90s when unset)"]),
        ("keepalive with hold 0", with("  holdTime: 0s\n  keepaliveTime: 1s"), &["spec.keepaliveTime", "0 or unset when the hold time is 0"]),
        ("connect time in ms", with("  connectTime: 1500ms"), &["spec.connectTime", "whole number of seconds"]),
        ("router ID IPv6", with("  routerID: 2001:db8::1"), &["spec.routerID", "is not an IPv4 address"]),
        ("password too long", with(&format!("  password: {}", "p".repeat(81))), &["spec.password", "80"]),
        ("password twice", with("  password: secret\n  passwordSecret:\n    name: s"), &["set at most one of spec.password and spec.passwordSecret"]),
        ("bad BFD profile name", with("  bfdProfile: Fast_BFD"), &["spec.bfdProfile", "is not an object name"]),
        ("VRF (MetalLB only)", with("  vrf: red"), &["unknown field \"spec.vrf\""]),
        ("aggregation /33", advertisement("  aggregationLength: 33"), &["spec.aggregationLength", "less than or equal to 32"]),
        ("aggregation v6 /129", advertisement("  aggregationLengthV6: 129"), &["spec.aggregationLengthV6", "less than or equal to 128"]),
        ("negative local pref", advertisement("  localPref: -1"), &["spec.localPref", "greater than or equal to 0"]),
        ("standard community too large", advertisement("  communities: [\"65536:1\"]"), &["spec.communities[0]", "\"65536:1\" is not a community"]),
        ("large community too large", advertisement("  communities: [\"large:1:2:4294967296\"]"), &["spec.communities[0]", "is not a community"]),
        ("bad community name", advertisement("  communities: [\"no export\"]"), &["spec.communities[0]", "is not a community name"]),
        ("bad peer name", advertisement("  peers: [\"Peer_A\"]"), &["spec.peers[0]", "is not an object name"]),
        ("bad community value", "apiVersion: ferrolb.io/v1beta1\nkind: Community\nmetadata:\n  name: x\nspec:\n  communities:\n  - name: a\n    value: \"1:2:3\"\n".to_string(), &["spec.communities[0].value", "\"1:2:3\" is not a community"]),
        ("duplicate community name", "apiVersion: ferrolb.io/v1beta1\nkind: Community\nmetadata:\n  name: x\nspec:\n  communities:\n  - {name: a, value: \"1:2\"}\n  - {name: a, value: \"1:3\"}\n".to_string(), &["spec.communities[1]", "Duplicate value"]),
        ("BFD interval 5 ms", bfd("  receiveInterval: 5"), &["spec.receiveInterval", "greater than or equal to 10"]),
        ("BFD multiplier 1", bfd("  detectMultiplier: 1"), &["spec.detectMultiplier", "greater than or equal to 2"]),
        ("BFD echo mode", bfd("  echoMode: true"), &["spec.echoMode", "echo mode is not supported"]),
        ("BFD minimum TTL 255", bfd("  minimumTtl: 255"), &["spec.minimumTtl", "less than or equal to 254"]),
    ];
    for (what, manifest, expected) in bad {
        let name = control_plane::unique_name("bad");
        let manifest = manifest.replace("name: x\n", &format!("name: {name}\n"));
        let err = apply(cp, &manifest).expect_err(&format!("{what}: the apiserver accepted it"));
        for needle in expected {
            assert!(
                err.contains(needle),
                "{what}: expected {needle:?} in:\n{err}"
            );
        }
        assert!(
            err.contains(&name) || err.contains("strict decoding error"),
            "{what}: error names the object: {err}"
        );
    }
}
