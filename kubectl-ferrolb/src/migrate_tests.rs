use serde_json::json;

use super::*;

fn peer(namespace: &str, name: &str, extra: Value) -> Value {
    let mut spec = json!({"myASN": 64512, "peerASN": 64513, "peerAddress": "198.51.100.254"});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({
        "apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer",
        "metadata": {"name": name, "namespace": namespace, "uid": "u", "resourceVersion": "7",
                     "labels": {"team": "net"},
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": spec,
        "status": {},
    })
}

#[test]
fn a_metallb_object_becomes_ferrolbs_cluster_scoped_with_its_spec() {
    let m = translate(
        &[peer("metallb-system", "router", json!({"holdTime": "9s"}))],
        &schemas(),
    );
    assert!(m.untranslated.is_empty(), "{:?}", m.untranslated);
    assert_eq!(
        m.objects,
        [json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "BGPPeer",
            "metadata": {"name": "router", "labels": {"team": "net"}},
            "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": "198.51.100.254", "holdTime": "9s"},
        })]
    );
}

#[test]
fn fields_ferrolb_lacks_are_taken_out_and_named() {
    let m = translate(
        &[peer(
            "metallb-system",
            "red",
            json!({"vrf": "red", "nodeSelectors": [{"matchLabels": {"a": "b"}, "colour": "x"}]}),
        )],
        &schemas(),
    );
    let named: Vec<String> = m.untranslated.iter().map(|u| u.to_string()).collect();
    assert_eq!(
        named,
        [
            "BGPPeer metallb-system/red: spec.nodeSelectors[0].colour: ferrolb has no such field; left out, so this object does not do all it did in MetalLB",
            "BGPPeer metallb-system/red: spec.vrf: ferrolb has no such field; left out, so this object does not do all it did in MetalLB",
        ]
    );
    let spec = &m.objects[0]["spec"];
    assert!(spec.get("vrf").is_none());
    assert_eq!(
        spec["nodeSelectors"],
        json!([{"matchLabels": {"a": "b"}}]),
        "labels are a map: kept"
    );
}

#[test]
fn one_name_in_two_namespaces_is_reported_not_merged() {
    let m = translate(
        &[
            peer("a", "router", json!({})),
            peer("b", "router", json!({})),
        ],
        &schemas(),
    );
    assert_eq!(m.objects.len(), 1);
    assert_eq!(
        m.untranslated[0].to_string(),
        "BGPPeer b/router: metadata.name: ferrolb's BGPPeer objects are cluster-scoped and BGPPeer a/router already takes the name router; left out (rename one)"
    );
}

#[test]
fn status_kinds_are_notes_other_objects_pass_through_last_and_unknown_kinds_are_problems() {
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}});
    let m = translate(
        &[
            service.clone(),
            json!({"apiVersion": "metallb.io/v1beta1", "kind": "ServiceL2Status", "metadata": {"name": "s", "namespace": "metallb-system"}}),
            json!({"apiVersion": "metallb.io/v1beta1", "kind": "MetalLB", "metadata": {"name": "m", "namespace": "metallb-system"}}),
            json!({"apiVersion": "metallb.io/v1alpha1", "kind": "Community", "metadata": {"name": "c", "namespace": "metallb-system"}}),
            json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement", "metadata": {"name": "l2", "namespace": "metallb-system"}}),
        ],
        &schemas(),
    );
    assert_eq!(m.objects.len(), 2);
    assert_eq!(m.objects[0]["kind"], "L2Advertisement");
    assert!(m.objects[0].get("spec").is_none(), "no spec in, none out");
    assert_eq!(m.objects[1], service);
    let problems: Vec<String> = m.untranslated.iter().map(|u| u.to_string()).collect();
    assert_eq!(
        problems,
        [
            "MetalLB metallb-system/m: ferrolb has no MetalLB; left out",
            "Community metallb-system/c: apiVersion: metallb.io/v1alpha1 is not a MetalLB version of Community this translates (metallb.io/v1beta1); left out",
        ]
    );
    let notes: Vec<String> = m.notes.iter().map(|u| u.to_string()).collect();
    assert_eq!(notes.len(), 2);
    assert_eq!(
        notes[0],
        "Service web: not a MetalLB object: passed through unchanged"
    );
    assert!(notes[1].starts_with("ServiceL2Status metallb-system/s: written by MetalLB"));
}

#[test]
fn every_kind_has_a_schema() {
    let s = schemas();
    for (kind, _) in KINDS {
        assert!(s[kind]["properties"]["spec"].is_object(), "{kind}");
    }
}

#[test]
fn an_unset_field_ferrolb_lacks_is_a_note_not_a_problem() {
    let m = translate(
        &[peer(
            "metallb-system",
            "p",
            json!({"dualStackAddressFamily": false, "vrf": ""}),
        )],
        &schemas(),
    );
    assert!(m.untranslated.is_empty(), "{:?}", m.untranslated);
    let notes: Vec<String> = m.notes.iter().map(|u| u.to_string()).collect();
    assert_eq!(
        notes,
        [
            "BGPPeer metallb-system/p: spec.dualStackAddressFamily: false is the same as leaving it out; left out",
            "BGPPeer metallb-system/p: spec.vrf: \"\" is the same as leaving it out; left out",
        ]
    );
    assert!(m.objects[0]["spec"].get("dualStackAddressFamily").is_none());
}
