//! `deploy/ferrolb.yaml`, the chart rendered as plain manifests: the real apiserver accepts
//! every object in it (server-side dry run), it holds the workloads and RBAC the chart installs,
//! and it expects the memberlist key in a Secret the user makes (no shared random key).

use ferrolb_tests::bins::workspace_root;
use ferrolb_tests::control_plane;
use ferrolb_tests::process::{run, run_input};
use serde_json::Value;

fn manifests() -> (String, Vec<Value>) {
    let text = std::fs::read_to_string(workspace_root().join("deploy/ferrolb.yaml")).unwrap();
    let docs = ferrolb_tests::rbac::documents(&text).unwrap();
    (text, docs)
}

#[test]
fn the_plain_manifests_hold_the_charts_objects_and_no_key() {
    let (_, docs) = manifests();
    let has = |kind: &str, name: &str| {
        docs.iter()
            .any(|d| d["kind"] == kind && d["metadata"]["name"] == name)
    };
    assert!(has("Namespace", "ferrolb-system"));
    assert!(has("Deployment", "ferrolb-controller"));
    assert!(has("DaemonSet", "ferrolb-speaker"));
    assert!(has("CustomResourceDefinition", "ipaddresspools.ferrolb.io"));
    assert!(has("CustomResourceDefinition", "bgppeers.ferrolb.io"));
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "Secret" && d["metadata"]["name"] == "ferrolb-memberlist"),
        "the key is the user's to make"
    );
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    assert!(
        ds.to_string().contains("\"ferrolb-memberlist\""),
        "the speakers read the key from Secret ferrolb-memberlist"
    );
}

#[test]
fn the_real_apiserver_accepts_every_object_of_the_plain_manifests() {
    let cp = control_plane::shared_with_crds();
    let (text, _) = manifests();
    // A dry run cannot create the namespace its namespaced objects go into: create it first.
    // The CRDs are already installed by the testbed's field manager: take them over (in the dry
    // run only).
    let _ = run(cp
        .kubectl()
        .unwrap()
        .args(["create", "namespace", "ferrolb-system"]));
    run_input(
        cp.kubectl().unwrap().args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "-f",
            "-",
        ]),
        &text,
    )
    .expect("kubectl apply --server-side --dry-run=server -f deploy/ferrolb.yaml");
}
