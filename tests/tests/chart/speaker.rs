//! The speakers' DaemonSet as rendered (host network, CAP_NET_RAW only, values reaching the
//! arguments) and their memberlist key: generated, mounted read-only, kept on `helm upgrade`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ferrolb_tests::control_plane;
use serde_json::{Value, json};

use crate::{
    assert_probes_on_the_monitoring_port, render, speaker_doc, strings,
    the_container_of_the_chart_image,
};

/// Standard base64 (with padding) decoded; panics on anything else.
fn base64_decode(text: &str) -> Vec<u8> {
    BASE64
        .decode(text)
        .unwrap_or_else(|e| panic!("not base64 ({e}): {text}"))
}

#[test]
fn speaker_daemonset_runs_on_the_host_network_with_net_raw_only() {
    let docs = render("ferrolb", "lb-system", &[]);
    let ds = speaker_doc(&docs, "DaemonSet");
    assert_eq!(ds["metadata"]["namespace"], "lb-system");
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "speaker"
    );
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "ferrolb-speaker");
    assert_eq!(
        speaker_doc(&docs, "ServiceAccount")["metadata"]["name"],
        "ferrolb-speaker"
    );
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    // Control-plane nodes run a speaker too, by default.
    assert_eq!(
        pod["tolerations"],
        json!([{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}])
    );

    let c = the_container_of_the_chart_image(pod);
    assert_eq!(strings(&c["command"]), ["ferrolb-speaker", "run"]);
    assert_eq!(
        strings(&c["args"]),
        [
            "--node-name=$(NODE_NAME)",
            "--memberlist-key-file=/etc/ferrolb/memberlist/key",
            "--memberlist-port=7946",
            "--metrics-addr=0.0.0.0:7473",
            "--secure-metrics-addr=0.0.0.0:9121",
            "--heartbeat-interval=50ms",
            "--dead-after=250ms",
            "--log-format=json",
        ]
    );
    assert_eq!(
        c["env"],
        json!([
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "MALLOC_ARENA_MAX", "value": "2"},
        ])
    );

    // CAP_NET_RAW and nothing else; no way to gain more; read-only root filesystem. uid 0 is
    // needed for the capability to be effective (see the template's comment).
    let sc = &c["securityContext"];
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(strings(&sc["capabilities"]["add"]), ["NET_RAW"]);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsUser"], 0);
    assert!(
        sc["privileged"].is_null() || sc["privileged"] == false,
        "{sc}"
    );

    // Probes on the metrics port; heartbeats on UDP.
    let ports = c["ports"].as_array().unwrap();
    assert!(
        ports.iter().any(|p| p["name"] == "monitoring"
            && p["containerPort"] == 7473
            && p["protocol"] == "TCP"),
        "{ports:?}"
    );
    assert!(
        ports.iter().any(|p| p["name"] == "memberlist"
            && p["containerPort"] == 7946
            && p["protocol"] == "UDP"),
        "{ports:?}"
    );
    assert!(
        ports.iter().any(|p| p["name"] == "memberlist-tcp"
            && p["containerPort"] == 7946
            && p["protocol"] == "TCP"),
        "lifelines: {ports:?}"
    );
    assert_probes_on_the_monitoring_port(c);
    assert_eq!(c["resources"]["requests"]["cpu"], "50m");
    assert_eq!(c["resources"]["limits"]["memory"], "128Mi");

    // Values reach the arguments; the lb class is the controller's.
    let docs = render(
        "ferrolb",
        "lb-system",
        &[
            "speaker.port=9473",
            "speaker.memberlistPort=9946",
            "speaker.heartbeatInterval=100ms",
            "speaker.deadAfter=1s",
            "speaker.excludeInterfaces=veth*\\,eth9",
            "speaker.logFormat=text",
            "speaker.image.tag=dev",
            "speaker.tolerations=null",
            "controller.loadBalancerClass=example.com/lb",
        ],
    );
    let pod = &speaker_doc(&docs, "DaemonSet")["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "ghcr.io/ferrolb/ferrolb:dev");
    let args = strings(&c["args"]);
    for want in [
        "--memberlist-port=9946",
        "--metrics-addr=0.0.0.0:9473",
        "--heartbeat-interval=100ms",
        "--dead-after=1s",
        "--exclude-interfaces=veth*,eth9",
        "--log-format=text",
        "--lb-class=example.com/lb",
    ] {
        assert!(args.contains(&want.to_string()), "{want} in {args:?}");
    }
    assert_eq!(c["ports"][0]["containerPort"], 9473);
    assert!(pod["tolerations"].is_null(), "{}", pod["tolerations"]);

    // Disabled: no speaker object at all.
    let docs = render("ferrolb", "lb-system", &["speaker.enabled=false"]);
    let left: Vec<&Value> = docs
        .iter()
        .filter(|d| d["metadata"]["labels"]["app.kubernetes.io/component"] == "speaker")
        .collect();
    assert!(left.is_empty(), "{left:#?}");
}

#[test]
fn memberlist_key_is_a_generated_secret_mounted_read_only() {
    let docs = render("ferrolb", "lb-system", &[]);
    let secret = speaker_doc(&docs, "Secret");
    assert_eq!(secret["metadata"]["name"], "ferrolb-speaker-memberlist");
    assert_eq!(secret["metadata"]["namespace"], "lb-system");
    let key = base64_decode(secret["data"]["key"].as_str().unwrap());
    assert_eq!(key.len(), 32, "{key:?}");
    assert!(key.iter().all(u8::is_ascii_alphanumeric), "{key:?}");
    // Each render (a fresh install) draws a new key.
    let again = render("ferrolb", "lb-system", &[]);
    assert_ne!(
        speaker_doc(&again, "Secret")["data"]["key"],
        secret["data"]["key"]
    );

    let pod = &speaker_doc(&docs, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        json!([{"name": "memberlist", "secret": {
            "secretName": "ferrolb-speaker-memberlist",
            "defaultMode": 0o400,
            "items": [{"key": "key", "path": "key"}],
        }}])
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        json!([{"name": "memberlist", "mountPath": "/etc/ferrolb/memberlist", "readOnly": true}])
    );

    // A Secret of the user's: none rendered, theirs mounted under the same file name.
    let docs = render(
        "ferrolb",
        "lb-system",
        &[
            "speaker.memberlist.existingSecret=my-key",
            "speaker.memberlist.existingSecretKey=heartbeat",
        ],
    );
    assert!(!docs.iter().any(|d| d["kind"] == "Secret"));
    let volume = &speaker_doc(&docs, "DaemonSet")["spec"]["template"]["spec"]["volumes"][0];
    assert_eq!(volume["secret"]["secretName"], "my-key");
    assert_eq!(
        volume["secret"]["items"],
        json!([{"key": "heartbeat", "path": "key"}])
    );
}

#[test]
fn memberlist_key_of_an_installed_release_is_kept_on_upgrade() {
    let cp = control_plane::shared_with_crds();
    let release = control_plane::unique_name("keyrel");
    let ns = control_plane::unique_name("keyns");
    let helm = |args: &[&str]| {
        ferrolb_tests::process::run(
            std::process::Command::new(ferrolb_tests::bins::binary("helm").unwrap())
                .args(args)
                .arg(format!("--kubeconfig={}", cp.kubeconfig().display()))
                .args(["--namespace", &ns]),
        )
        .unwrap_or_else(|e| panic!("helm {}: {e:#}", args.join(" ")))
    };
    let chart = ferrolb_tests::bins::workspace_root().join("charts/ferrolb");
    let chart = chart.to_str().unwrap();
    // The CRDs are installed already (by kubectl); no pod ever runs (no kubelet).
    let key = || {
        cp.kubectl_run(&[
            "get",
            "secret",
            &format!("{release}-ferrolb-speaker-memberlist"),
            "-n",
            &ns,
            "-o",
            "jsonpath={.data.key}",
        ])
        .unwrap()
    };
    helm(&[
        "install",
        &release,
        chart,
        "--create-namespace",
        "--set",
        "crds.enabled=false",
    ]);
    let installed = key();
    assert_eq!(base64_decode(&installed).len(), 32);
    helm(&[
        "upgrade",
        &release,
        chart,
        "--set",
        "crds.enabled=false,speaker.heartbeatInterval=100ms",
    ]);
    assert_eq!(key(), installed, "helm upgrade kept the key");
    let ds = cp
        .kubectl_run(&[
            "get",
            "daemonset",
            &format!("{release}-ferrolb-speaker"),
            "-n",
            &ns,
            "-o",
            "json",
        ])
        .unwrap();
    let ds: Value = serde_json::from_str(&ds).unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        format!("{release}-ferrolb-speaker-memberlist")
    );
    assert_eq!(pod["volumes"][0]["secret"]["defaultMode"], 0o400);
    assert!(
        strings(&pod["containers"][0]["args"]).contains(&"--heartbeat-interval=100ms".to_string())
    );
    helm(&["uninstall", &release]);
}
