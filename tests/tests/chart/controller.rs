//! The controller's Deployment as rendered: hardened replicas with the controller's arguments,
//! the load balancer class, and the optional metrics Service.

use ferrolb_tests::rbac;

use crate::{
    assert_probes_on_the_monitoring_port, controller_doc, render, strings,
    the_container_of_the_chart_image,
};

#[test]
fn deployment_runs_two_hardened_replicas_with_the_controller_args() {
    let docs = render("ferrolb", "lb-system", &[]);
    let deploy = controller_doc(&docs, "Deployment");
    assert_eq!(deploy["metadata"]["namespace"], "lb-system");
    let spec = &deploy["spec"];
    assert_eq!(spec["replicas"], 2);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "ferrolb-controller");

    let c = the_container_of_the_chart_image(pod);
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(strings(&c["command"]), ["ferrolb-controller", "run"]);
    assert_eq!(
        strings(&c["args"]),
        [
            "--lease-namespace=$(POD_NAMESPACE)",
            "--lease-name=ferrolb-controller",
            "--metrics-addr=0.0.0.0:7472",
            "--secure-metrics-addr=0.0.0.0:9120",
            "--log-format=json",
        ]
    );
    assert!(
        !strings(&c["args"])
            .iter()
            .any(|a| a.starts_with("--lb-class")),
        "no --lb-class unless controller.loadBalancerClass is set"
    );
    for (var, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let env = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == var)
            .unwrap_or_else(|| panic!("env {var} is set: {}", c["env"]));
        assert_eq!(env["valueFrom"]["fieldRef"]["fieldPath"], path, "{var}");
    }

    // Hardened: non-root, read-only root, no capabilities, no privilege escalation, seccomp.
    let sc = &c["securityContext"];
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert!(sc["capabilities"]["add"].is_null(), "{sc}");
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(
        pod["hostNetwork"].is_null(),
        "the controller never needs the host network"
    );

    // Probes and metrics on the named port 7472.
    let ports = c["ports"].as_array().unwrap();
    assert!(
        ports
            .iter()
            .any(|p| p["name"] == "monitoring" && p["containerPort"] == 7472),
        "{ports:?}"
    );
    assert_probes_on_the_monitoring_port(c);

    // Small requests and a memory limit.
    assert_eq!(c["resources"]["requests"]["cpu"], "50m");
    assert_eq!(c["resources"]["requests"]["memory"], "64Mi");
    assert_eq!(c["resources"]["limits"]["memory"], "128Mi");

    // Replicas prefer different nodes, selecting exactly this Deployment's pods.
    let terms =
        pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .unwrap_or_else(|| panic!("preferred pod anti-affinity: {}", pod["affinity"]));
    let term = &terms[0]["podAffinityTerm"];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        term["labelSelector"]["matchLabels"],
        spec["selector"]["matchLabels"]
    );
    assert_eq!(
        spec["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "controller"
    );
    assert!(
        pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            .is_null()
    );

    // The controller's Deployment and the speakers' DaemonSet are the only workloads.
    let mut workloads: Vec<String> = docs
        .iter()
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some("Deployment" | "DaemonSet" | "StatefulSet" | "Pod" | "Job")
            )
        })
        .map(|d| {
            format!(
                "{} {}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    workloads.sort();
    assert_eq!(
        workloads,
        ["DaemonSet ferrolb-speaker", "Deployment ferrolb-controller"]
    );
}

#[test]
fn lb_class_is_passed_only_when_set_and_must_be_a_valid_class() {
    let docs = render(
        "classy",
        "lb-system",
        &[
            "controller.loadBalancerClass=example.com/ferrolb",
            "image.tag=dev",
            "controller.replicas=3",
        ],
    );
    let deploy = controller_doc(&docs, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 3);
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "ghcr.io/ferrolb/ferrolb:dev");
    let args = strings(&c["args"]);
    assert_eq!(
        args.iter()
            .filter(|a| a.starts_with("--lb-class"))
            .collect::<Vec<_>>(),
        ["--lb-class=example.com/ferrolb"]
    );
    assert!(
        args.contains(&"--lease-name=ferrolb-controller".to_string()),
        "{args:?}"
    );

    // A class Kubernetes would refuse on a Service fails the render, naming the value.
    let err = rbac::render_chart(
        "classy",
        "lb-system",
        &["controller.loadBalancerClass=ferrolb"],
    )
    .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("controller.loadBalancerClass") && err.contains("domain prefix"),
        "{err}"
    );
}

#[test]
fn metrics_service_selects_the_controller_pods_when_enabled() {
    let docs = render("ferrolb", "lb-system", &[]);
    assert!(
        !docs.iter().any(|d| d["kind"] == "Service"),
        "no Service by default"
    );
    let docs = render(
        "ferrolb",
        "lb-system",
        &["controller.metricsService.enabled=true"],
    );
    let svc = controller_doc(&docs, "Service");
    let deploy = controller_doc(&docs, "Deployment");
    assert_eq!(
        svc["spec"]["selector"],
        deploy["spec"]["selector"]["matchLabels"]
    );
    // By default it fronts the HTTPS /metrics; with metrics.secure=false the plain one.
    assert_eq!(svc["spec"]["ports"][0]["port"], 9120);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    let docs = render(
        "ferrolb",
        "lb-system",
        &[
            "controller.metricsService.enabled=true",
            "metrics.secure=false",
        ],
    );
    let svc = controller_doc(&docs, "Service");
    assert_eq!(svc["spec"]["ports"][0]["port"], 7472);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "monitoring");
}
