//! `kubectl ferrolb migrate metallb` with MetalLB's own files (its Go module, pinned): every
//! sample manifest of MetalLB's documentation translates into objects the real apiserver
//! accepts, with the spec carried over field for field, or has what cannot be translated named
//! by object and field; MetalLB's objects stored under its real CRDs are read from the cluster
//! the same way.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};
use ferrolb_tests::control_plane::{self, ControlPlane};
use ferrolb_tests::metallb;
use ferrolb_tests::process::{run, run_input};
use serde::Deserialize;
use serde_json::Value;

/// What the plugin printed and how it exited.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn plugin(cp: &ControlPlane, args: &[&str], input: Option<&str>) -> Result<Run> {
    use std::io::Write;
    let binary = ferrolb_tests::bins::kubectl_ferrolb()?;
    let mut child = std::process::Command::new(binary)
        .args(args)
        .env("KUBECONFIG", cp.kubeconfig())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(input.unwrap_or_default().as_bytes())?;
    drop(stdin);
    let out = child.wait_with_output()?;
    Ok(Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn documents(text: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize(doc)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

fn is_metallb_config(o: &Value) -> bool {
    o["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("metallb.io/"))
}

/// Every translated object is ferrolb's, cluster-scoped, named and specified as MetalLB's was
/// (less the fields `dropped`); the others came through unchanged.
fn assert_round_trip(file: &Path, input: &[Value], output: &[Value], dropped: &[&str]) {
    let (theirs, others): (Vec<&Value>, Vec<&Value>) =
        input.iter().partition(|o| is_metallb_config(o));
    assert_eq!(output.len(), input.len(), "{}: {output:#?}", file.display());
    for (before, after) in theirs.iter().zip(output) {
        assert_eq!(
            after["apiVersion"],
            "ferrolb.io/v1beta1",
            "{}",
            file.display()
        );
        assert_eq!(after["kind"], before["kind"]);
        assert_eq!(after["metadata"]["name"], before["metadata"]["name"]);
        assert!(after["metadata"].get("namespace").is_none());
        let mut spec = before.get("spec").cloned();
        if let Some(Value::Object(map)) = &mut spec {
            for field in dropped {
                map.remove(*field);
            }
        }
        assert_eq!(after.get("spec").cloned(), spec, "{}", file.display());
    }
    for (before, after) in others.iter().zip(&output[theirs.len()..]) {
        assert_eq!(*before, after, "{}: passed through", file.display());
    }
}

#[test]
fn every_sample_of_metallbs_docs_translates_or_is_named() -> Result<()> {
    let cp = control_plane::shared_with_crds();
    let samples = metallb::files("configsamples")?;
    assert!(samples.len() >= 15, "{samples:?}");
    for file in &samples {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let text = std::fs::read_to_string(file)?;
        let run = plugin(
            cp,
            &["migrate", "metallb", "-f", &file.to_string_lossy()],
            None,
        )?;
        eprintln!("{name}: exit {}\n{}", run.code, run.stderr);
        let output = documents(&run.stdout)?;
        if name == "bgppeer_with_vrf.yaml" {
            // VRFs are MetalLB's alone: named, and the peer without it still applies.
            assert_eq!(run.code, 3, "{run:?}");
            assert!(
                run.stderr.contains(
                    "not translated: BGPPeer metallb-system/peer: spec.vrf: ferrolb has no such field"
                ),
                "{}",
                run.stderr
            );
            assert_round_trip(file, &documents(&text)?, &output, &["vrf"]);
        } else {
            assert_eq!(run.code, 0, "{name}: {run:?}");
            assert!(!run.stderr.contains("not translated"), "{}", run.stderr);
            assert_round_trip(file, &documents(&text)?, &output, &[]);
        }
        // kubectl takes the output as it is (the apiserver checks, nothing is stored).
        run_input(
            cp.kubectl()?
                .args(["apply", "--dry-run=server", "-n", "default", "-f", "-"]),
            &run.stdout,
        )
        .with_context(|| format!("kubectl apply --dry-run=server of {name}'s translation"))?;
    }
    Ok(())
}

#[test]
fn what_ferrolb_refuses_is_named_with_the_apiservers_words() -> Result<()> {
    let cp = control_plane::shared_with_crds();
    let manifest = "apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata:
  name: echo
  namespace: metallb-system
spec:
  echoMode: true
---
apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata:
  name: plain
  namespace: metallb-system
spec:
  receiveInterval: 300
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: same
  namespace: team-a
spec:
  addresses: [198.51.100.0/28]
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: same
  namespace: team-b
spec:
  addresses: [198.51.100.16/28]
";
    let run = plugin(
        cp,
        &["migrate", "metallb", "-f", "-", "-o", "json"],
        Some(manifest),
    )?;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr
            .contains("not translated: BFDProfile echo: the apiserver refuses ferrolb's version:")
            && run.stderr.contains("spec.echoMode"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "not translated: IPAddressPool team-b/same: metadata.name: ferrolb's IPAddressPool objects are cluster-scoped and IPAddressPool team-a/same already takes the name same"
        ),
        "{}",
        run.stderr
    );
    let list: Value = serde_json::from_str(&run.stdout)?;
    let names: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            format!(
                "{} {}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(names, ["BFDProfile plain", "IPAddressPool same"]);
    Ok(())
}

#[test]
fn metallbs_objects_are_read_from_the_cluster() -> Result<()> {
    let cp = control_plane::shared_with_crds();
    // MetalLB's real CRDs; its objects are stored, nothing acts on them.
    for crd in metallb::files("config/crd/bases")? {
        run(cp
            .kubectl()?
            .args(["apply", "--server-side", "-f", &crd.to_string_lossy()]))?;
    }
    run(cp.kubectl()?.args([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/bgppeers.metallb.io",
        "crd/ipaddresspools.metallb.io",
        "crd/bfdprofiles.metallb.io",
    ]))?;
    let _ = run(cp
        .kubectl()?
        .args(["create", "namespace", "metallb-system"]));
    let dir = metallb::module_dir()?.join("configsamples");
    let mut applied = Vec::new();
    for sample in [
        "simple_pool_adv_l2.yaml",
        "bgppeer_with_bfdprofile.yaml",
        "bgpadvertisement_community_alias.yaml",
        "bgppeer_with_vrf.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(sample))?;
        // The vrf sample's peer has the name of the bfdprofile sample's: rename it.
        let text = if sample == "bgppeer_with_vrf.yaml" {
            text.replace("name: peer", "name: peer-red")
        } else {
            text
        };
        cp.kubectl_apply(&text)
            .with_context(|| format!("applying MetalLB's {sample}"))?;
        applied.extend(documents(&text)?);
    }
    let migrated = plugin(cp, &["migrate", "metallb"], None)?;
    eprintln!("{}\n{}", migrated.stdout, migrated.stderr);
    assert_eq!(migrated.code, 3, "the VRF is named: {migrated:?}");
    assert!(
        migrated
            .stderr
            .contains("not translated: BGPPeer metallb-system/peer-red: spec.vrf"),
        "{}",
        migrated.stderr
    );
    let output = documents(&migrated.stdout)?;
    for before in &applied {
        let after = output
            .iter()
            .find(|o| {
                o["kind"] == before["kind"] && o["metadata"]["name"] == before["metadata"]["name"]
            })
            .with_context(|| {
                format!(
                    "{} {} not in the output",
                    before["kind"], before["metadata"]["name"]
                )
            })?;
        assert_eq!(after["apiVersion"], "ferrolb.io/v1beta1");
        let mut spec = before.get("spec").cloned().unwrap_or(Value::Null);
        if let Value::Object(map) = &mut spec {
            map.remove("vrf");
        }
        // The apiserver defaulted what the manifests left out (MetalLB's CRD defaults); what
        // they set is carried over.
        if let Value::Object(map) = &spec {
            for (k, v) in map {
                assert_eq!(
                    &after["spec"][k], v,
                    "{}: spec.{k}",
                    before["metadata"]["name"]
                );
            }
        }
    }
    // Clean up: other tests of this binary's control plane do not expect MetalLB's objects.
    for kind in [
        "ipaddresspools",
        "l2advertisements",
        "bgppeers",
        "bgpadvertisements",
        "communities",
        "bfdprofiles",
    ] {
        run(cp.kubectl()?.args([
            "delete",
            &format!("{kind}.metallb.io"),
            "--all",
            "-n",
            "metallb-system",
        ]))?;
    }
    Ok(())
}
