//! The Helm chart: what `helm template` renders for the controller and the speakers, and their
//! RBAC on a real apiserver, checked both with `kubectl auth can-i` and with real requests under
//! tokens minted for the chart's ServiceAccounts.

use std::sync::OnceLock;

use ferrolb_crds::pool::IPAddressPool;
use ferrolb_tests::control_plane::{self, ControlPlane};
use ferrolb_tests::rbac::{self, CONTROLLER_LEASE};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn cluster() -> &'static ControlPlane {
    static CRDS: OnceLock<()> = OnceLock::new();
    let cp = control_plane::shared();
    CRDS.get_or_init(|| {
        cp.install_crds()
            .expect("CRDs install and become Established")
    });
    cp
}

/// The rendered documents of the chart.
fn render(release: &str, namespace: &str, set: &[&str]) -> Vec<Value> {
    rbac::documents(&rbac::render_chart(release, namespace, set).unwrap()).unwrap()
}

/// The one document of `kind` labelled `app.kubernetes.io/component=<component>`.
fn component_doc<'a>(docs: &'a [Value], kind: &str, component: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            d["kind"] == kind && d["metadata"]["labels"]["app.kubernetes.io/component"] == component
        })
        .collect();
    assert_eq!(found.len(), 1, "one {component} {kind}: {found:#?}");
    found[0]
}

/// The one document of `kind` labelled component=controller.
fn controller_doc<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    component_doc(docs, kind, "controller")
}

/// The one document of `kind` labelled component=speaker.
fn speaker_doc<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    component_doc(docs, kind, "speaker")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn chart_app_version() -> String {
    let chart = std::fs::read_to_string(
        ferrolb_tests::bins::workspace_root().join("charts/ferrolb/Chart.yaml"),
    )
    .unwrap();
    let chart: Value = serde_yaml::from_str(&chart).unwrap();
    chart["appVersion"].as_str().unwrap().to_string()
}

#[test]
fn deployment_runs_two_hardened_replicas_with_the_controller_args() {
    let docs = render("ferrolb", "lb-system", &[]);
    let deploy = controller_doc(&docs, "Deployment");
    assert_eq!(deploy["metadata"]["namespace"], "lb-system");
    let spec = &deploy["spec"];
    assert_eq!(spec["replicas"], 2);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "ferrolb-controller");

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(
        c["image"],
        format!("ghcr.io/ferrolb/ferrolb:{}", chart_app_version())
    );
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(strings(&c["command"]), ["ferrolb-controller", "run"]);
    assert_eq!(
        strings(&c["args"]),
        [
            "--lease-namespace=$(POD_NAMESPACE)",
            "--lease-name=ferrolb-controller",
            "--metrics-addr=0.0.0.0:7472",
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
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "monitoring");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "monitoring");

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
fn helm_lint_strict_passes() {
    let helm = ferrolb_tests::bins::binary("helm").unwrap();
    let chart = ferrolb_tests::bins::workspace_root().join("charts/ferrolb");
    for set in [
        "controller.loadBalancerClass=",
        "controller.loadBalancerClass=example.com/lb,controller.metricsService.enabled=true",
        "speaker.enabled=false",
        "speaker.memberlist.existingSecret=mine,speaker.excludeInterfaces=veth*\\,eth9",
    ] {
        ferrolb_tests::process::run(
            std::process::Command::new(&helm)
                .args(["lint", "--strict", "--set", set])
                .arg(&chart),
        )
        .unwrap_or_else(|e| panic!("helm lint --strict --set {set}: {e:#}"));
    }
}

/// `helm template` of the chart (release `ferrolb` in `lb-system`) with `args` (`--set`,
/// `--set-string`, `--set-json`, ... flags): its documents, or helm's error (stderr).
fn template<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Result<Vec<Value>, String> {
    let out = std::process::Command::new(ferrolb_tests::bins::binary("helm").unwrap())
        .args(["template", "ferrolb"])
        .arg(ferrolb_tests::bins::workspace_root().join("charts/ferrolb"))
        .args(["--namespace", "lb-system"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(rbac::documents(&String::from_utf8_lossy(&out.stdout)).unwrap())
}

/// The schema of the value at `path` (keys from the root); null where the schema has none.
fn schema_at<'a>(schema: &'a Value, path: &[&str]) -> &'a Value {
    path.iter()
        .fold(schema, |node, key| &node["properties"][*key])
}

#[test]
fn values_schema_types_and_describes_every_value() {
    let root = ferrolb_tests::bins::workspace_root().join("charts/ferrolb");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("values.schema.json")).unwrap())
            .expect("values.schema.json is JSON");
    assert_eq!(
        schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "a draft Helm v4's validator (santhosh-tekuri/jsonschema v6) knows without fetching it"
    );
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("values.yaml")).unwrap()).unwrap();

    // Every value in values.yaml has a typed, described entry, down to the leaves the schema
    // spells out (maps such as nodeSelector are typed by additionalProperties instead).
    fn walk(values: &Value, schema: &Value, path: &str, missing: &mut Vec<String>) {
        let Some(map) = values.as_object() else {
            return;
        };
        for (key, value) in map {
            let path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            let entry = &schema["properties"][key];
            if entry.is_null() {
                if schema["additionalProperties"].is_object() {
                    continue; // a map's entry, typed by additionalProperties
                }
                missing.push(format!("{path}: not in the schema"));
                continue;
            }
            if entry["type"].is_null() {
                missing.push(format!("{path}: no type"));
            }
            if entry["description"].as_str().is_none_or(str::is_empty) {
                missing.push(format!("{path}: no description"));
            }
            walk(value, entry, &path, missing);
        }
    }
    let mut missing = Vec::new();
    walk(&values, &schema, "", &mut missing);
    assert!(missing.is_empty(), "{}", missing.join("\n"));

    // Where a misspelt key would otherwise be ignored without a word, it is refused.
    for path in [
        "",
        "crds",
        "image",
        "controller",
        "controller.metricsService",
        "controller.serviceAccount",
        "controller.resources",
        "controller.affinity",
        "speaker",
        "speaker.image",
        "speaker.memberlist",
        "speaker.serviceAccount",
        "speaker.resources",
        "speaker.affinity",
    ] {
        let keys: Vec<&str> = path.split('.').filter(|k| !k.is_empty()).collect();
        assert_eq!(
            schema_at(&schema, &keys)["additionalProperties"],
            false,
            "additionalProperties of {path:?}"
        );
    }
    // `global` is Helm's: users may set it, and Helm copies it into the subchart's values.
    assert_eq!(schema_at(&schema, &["global"])["type"], "object");
    assert_eq!(schema_at(&schema, &["crds", "global"])["type"], "object");
}

#[test]
fn wrong_values_fail_the_render_naming_the_value_and_what_was_expected() {
    // (flags, path in helm's message, what helm says was expected)
    let cases: &[(&[&str], &str, &str)] = &[
        // `--set` makes numbers of digits: --set-string / --set-json force a string.
        (
            &["--set-string", "speaker.port=abc"],
            "/speaker/port",
            "got string, want integer",
        ),
        (
            &["--set-json", r#"controller.replicas="2""#],
            "/controller/replicas",
            "got string, want integer",
        ),
        (
            &["--set", "controller.replicas=-1"],
            "/controller/replicas",
            "minimum: got -1, want 0",
        ),
        (
            &["--set", "speaker.logFormat=xml"],
            "/speaker/logFormat",
            "value must be one of 'text', 'json'",
        ),
        (
            &["--set", "speaker.deadAfter=soon"],
            "/speaker/deadAfter",
            "'soon' does not match pattern '^[0-9]*[1-9][0-9]*(ms|s|m)?$'",
        ),
        // The speaker's parse_duration knows ms, s and m only, and a zero interval is no interval.
        (
            &["--set", "speaker.heartbeatInterval=1h"],
            "/speaker/heartbeatInterval",
            "'1h' does not match pattern",
        ),
        (
            &["--set", "speaker.heartbeatInterval=0s"],
            "/speaker/heartbeatInterval",
            "'0s' does not match pattern",
        ),
        // A number would render as 3e+06 from a values file once it is large: durations are text.
        (
            &["--set", "speaker.deadAfter=3"],
            "/speaker/deadAfter",
            "got number, want string",
        ),
        (
            &["--set", "image.pullPolicy=Sometimes"],
            "/image/pullPolicy",
            "value must be one of 'Always', 'IfNotPresent', 'Never'",
        ),
        (
            &["--set", "speaker.image.pullPolicy=Sometimes"],
            "/speaker/image/pullPolicy",
            "value must be one of '', 'Always', 'IfNotPresent', 'Never'",
        ),
        (
            &["--set", "image.repository="],
            "/image/repository",
            "minLength: got 0, want 1",
        ),
        (
            &["--set", "image.tag=12"],
            "/image/tag",
            "got number, want string",
        ),
        (
            &["--set", "speaker.memberlistPort=70000"],
            "/speaker/memberlistPort",
            "maximum: got 70,000, want 65,535",
        ),
        (
            &["--set", "controller.metricsPort=0"],
            "/controller/metricsPort",
            "minimum: got 0, want 1",
        ),
        (
            &["--set", "speaker.enabled=yes"],
            "/speaker/enabled",
            "got string, want boolean",
        ),
        (
            &["--set", "speaker.memberlist.existingSecretKey="],
            "/speaker/memberlist/existingSecretKey",
            "minLength: got 0, want 1",
        ),
        // Misspelt keys.
        (
            &["--set", "speaker.heartbeatIntervall=1s"],
            "/speaker",
            "additional properties 'heartbeatIntervall' not allowed",
        ),
        (
            &["--set", "crds.enable=false"],
            "/crds",
            "additional properties 'enable' not allowed",
        ),
        (
            &["--set", "replicas=3"],
            "",
            "additional properties 'replicas' not allowed",
        ),
        (
            &["--set-json", r#"speaker.affinity={"nodeAffinty":{}}"#],
            "/speaker/affinity",
            "additional properties 'nodeAffinty' not allowed",
        ),
        // Shapes.
        (
            &["--set-json", r#"controller.nodeSelector=["linux"]"#],
            "/controller/nodeSelector",
            "got array, want object",
        ),
        (
            &["--set", "controller.nodeSelector.disk=1"],
            "/controller/nodeSelector/disk",
            "got number, want string",
        ),
        (
            &["--set-json", r#"speaker.tolerations={"key":"a"}"#],
            "/speaker/tolerations",
            "got object, want array",
        ),
        (
            &["--set-json", r#"controller.extraArgs=["--x",1]"#],
            "/controller/extraArgs/1",
            "got number, want string",
        ),
        (
            &["--set-json", r#"imagePullSecrets=["regcred"]"#],
            "/imagePullSecrets/0",
            "got string, want object",
        ),
        (
            &[
                "--set-json",
                r#"controller.resources={"limits":{"memory":true}}"#,
            ],
            "/controller/resources/limits/memory",
            "got boolean, want number or string",
        ),
    ];
    let mut wrong = Vec::new();
    for (args, path, expected) in cases {
        let flags = args.join(" ");
        match template(args) {
            Ok(_) => wrong.push(format!("{flags}: rendered")),
            Err(err) => {
                let line = format!("- at '{path}': {expected}");
                if !(err.contains("values don't meet the specifications of the schema")
                    && err.lines().any(|l| l.starts_with(&line)))
                {
                    wrong.push(format!("{flags}: no line starting {line:?} in:\n{err}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));

    // Each wrong value is named, not only the first.
    let err = template(&[
        "--set",
        "speaker.logFormat=xml",
        "--set-string",
        "speaker.port=abc",
    ])
    .unwrap_err();
    assert!(
        err.contains("- at '/speaker/logFormat': value must be one of 'text', 'json'")
            && err.contains("- at '/speaker/port': got string, want integer"),
        "{err}"
    );

    // `helm lint --strict` checks the same schema.
    let helm = ferrolb_tests::bins::binary("helm").unwrap();
    let chart = ferrolb_tests::bins::workspace_root().join("charts/ferrolb");
    let err = ferrolb_tests::process::run(
        std::process::Command::new(&helm)
            .args(["lint", "--strict", "--set", "speaker.logFormat=xml"])
            .arg(&chart),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("- at '/speaker/logFormat': value must be one of"),
        "{err:#}"
    );
}

#[test]
fn values_the_schema_accepts_render_as_given() {
    let cases: &[(&[&str], &str)] = &[
        // Every duration form the speaker parses: ms, s, m, and a bare number of seconds.
        (
            &["--set", "speaker.heartbeatInterval=1s,speaker.deadAfter=2m"],
            "--dead-after=2m",
        ),
        (
            &[
                "--set-string",
                "speaker.heartbeatInterval=1,speaker.deadAfter=3",
            ],
            "--dead-after=3",
        ),
        (
            &["--set", "speaker.heartbeatInterval=100ms"],
            "--heartbeat-interval=100ms",
        ),
        // The speaker's image fields may be empty: they fall back to `image`.
        (&["--set", "speaker.image.pullPolicy="], "--log-format=json"),
        (&["--set", "speaker.logFormat=text"], "--log-format=text"),
        // A numeric tag, as a string.
        (&["--set-string", "image.tag=12"], "--log-format=json"),
        (
            &["--set", "speaker.extraArgs[0]=--responder-threads=2"],
            "--responder-threads=2",
        ),
    ];
    for (args, want) in cases {
        let docs = template(args).unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
        let ds = speaker_doc(&docs, "DaemonSet");
        let args_rendered = strings(&ds["spec"]["template"]["spec"]["containers"][0]["args"]);
        assert!(
            args_rendered.iter().any(|a| a == want),
            "{want} in {args_rendered:?}"
        );
    }

    // Zero replicas (a stopped controller), a pull secret, globals, scheduling shapes.
    let docs = template(&[
        "--set",
        "controller.replicas=0,global.region=eu,imagePullSecrets[0].name=regcred",
        "--set-json",
        r#"controller.tolerations=[{"key":"dedicated","operator":"Equal","value":"lb","effect":"NoSchedule"}]"#,
        "--set-json",
        r#"speaker.affinity={"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"lb","operator":"Exists"}]}]}}}"#,
        "--set-json",
        r#"controller.podAnnotations={"prometheus.io/scrape":"true"}"#,
        "--set",
        "speaker.tolerations=null,controller.resources.limits.cpu=1",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let deploy = controller_doc(&docs, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 0);
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(pod["containers"][0]["resources"]["limits"]["cpu"], 1);
    assert_eq!(
        deploy["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    let ds_pod = &speaker_doc(&docs, "DaemonSet")["spec"]["template"]["spec"];
    assert!(ds_pod["affinity"]["nodeAffinity"].is_object(), "{ds_pod}");
    assert!(ds_pod["tolerations"].is_null());
}

/// The `--set`/`--set-string`/`--set-json` examples in the README and docs/*.md: each value in
/// them, with the path of its key as helm's schema errors name it (`/speaker/logFormat`).
fn documented_set_examples() -> Vec<(String, Vec<String>, String)> {
    let root = ferrolb_tests::bins::workspace_root();
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    let mut examples = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        let words: Vec<&str> = text.split_whitespace().collect();
        for pair in words.windows(2) {
            let flag = pair[0].trim_start_matches('`');
            if !matches!(flag, "--set" | "--set-string" | "--set-json") || !pair[1].contains('=') {
                continue;
            }
            // Markdown's backticks, shell quotes and trailing punctuation off; JSON's quotes kept.
            let value = pair[1]
                .trim_end_matches([')', ',', ';', '.'])
                .trim_matches(['`', '\'']);
            examples.push((
                name.clone(),
                vec![flag.to_string(), value.to_string()],
                text.clone(),
            ));
        }
    }
    examples
}

#[test]
fn documented_set_examples_pass_the_schema_or_fail_as_documented() {
    let examples = documented_set_examples();
    assert!(
        examples
            .iter()
            .any(|(_, args, _)| args[1] == "crds.enabled=false"),
        "the docs' `--set crds.enabled=false` is found: {examples:?}"
    );
    let mut wrong = Vec::new();
    for (file, args, text) in &examples {
        let flags = args.join(" ");
        // A documented failure shows helm's line for the key: `- at '/speaker/logFormat': ...`,
        // or for a misspelt one its parent's `- at '/speaker': additional properties 'x' ...`.
        let documented: Vec<&str> = args[1]
            .split(',')
            .filter_map(|set| set.split_once('='))
            .filter_map(|(key, _)| {
                let path = key.replace('.', "/");
                // JSON pointers: the root is '', its keys '/key'.
                let (parent, last) = match path.rsplit_once('/') {
                    Some((parent, last)) => (format!("/{parent}"), last),
                    None => (String::new(), path.as_str()),
                };
                let own = format!("- at '/{path}'");
                let misspelt = format!("- at '{parent}': additional properties '{last}'");
                text.lines()
                    .map(str::trim)
                    .find(|l| l.starts_with(&own) || l.starts_with(&misspelt))
            })
            .collect();
        match (template(&args[..]), documented.is_empty()) {
            (Ok(_), true) => {}
            (Ok(_), false) => wrong.push(format!(
                "{file}: {flags} rendered, the docs show {documented:?}"
            )),
            (Err(err), true) => wrong.push(format!("{file}: {flags} fails:\n{err}")),
            (Err(err), false) => {
                for line in documented {
                    if !err.lines().any(|l| l.trim() == line) {
                        wrong.push(format!(
                            "{file}: {flags}: helm does not print {line:?}:\n{err}"
                        ));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
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
    assert_eq!(svc["spec"]["ports"][0]["port"], 7472);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "monitoring");
}

/// A policy rule as a comparable tuple: (apiGroups, resources, resourceNames, verbs), each sorted.
type Rule = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);

/// A role's rules, sorted.
fn rules(role: &Value) -> Vec<Rule> {
    let sorted = |v: &Value| {
        let mut s = if v.is_null() { Vec::new() } else { strings(v) };
        s.sort();
        s
    };
    let mut out: Vec<_> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                sorted(&r["apiGroups"]),
                sorted(&r["resources"]),
                sorted(&r["resourceNames"]),
                sorted(&r["verbs"]),
            )
        })
        .collect();
    out.sort();
    out
}

fn rule(groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str]) -> Rule {
    let v = |s: &[&str]| {
        let mut v: Vec<String> = s.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    (v(groups), v(resources), v(names), v(verbs))
}

#[test]
fn rendered_rbac_is_exactly_the_least_privilege_rules() {
    let docs = render("rules", "lb-system", &[]);
    let mut want = vec![
        rule(&[""], &["services"], &[], &["get", "list", "watch"]),
        rule(&[""], &["services/status"], &[], &["patch", "update"]),
        rule(&[""], &["namespaces"], &[], &["get", "list", "watch"]),
        rule(
            &["ferrolb.io"],
            &["ipaddresspools"],
            &[],
            &["get", "list", "watch"],
        ),
        rule(
            &["ferrolb.io"],
            &["ipaddresspools/status"],
            &[],
            &["patch", "update"],
        ),
        rule(&["events.k8s.io"], &["events"], &[], &["create", "patch"]),
        rule(&[""], &["events"], &[], &["create", "patch"]),
    ];
    want.sort();
    assert_eq!(rules(controller_doc(&docs, "ClusterRole")), want);

    let role = controller_doc(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], "lb-system");
    let mut want = vec![
        rule(&["coordination.k8s.io"], &["leases"], &[], &["create"]),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &[CONTROLLER_LEASE],
            &["get", "update"],
        ),
    ];
    want.sort();
    assert_eq!(rules(role), want);

    // Bindings give exactly these roles to the controller's ServiceAccount in the release
    // namespace.
    let sa = controller_doc(&docs, "ServiceAccount")["metadata"]["name"].clone();
    for (binding, role) in [
        ("ClusterRoleBinding", "ClusterRole"),
        ("RoleBinding", "Role"),
    ] {
        let b = controller_doc(&docs, binding);
        assert_eq!(b["roleRef"]["kind"], role);
        assert_eq!(
            b["roleRef"]["name"],
            controller_doc(&docs, role)["metadata"]["name"]
        );
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": sa, "namespace": "lb-system"}]),
            "{binding}"
        );
    }
}

#[test]
fn cluster_scoped_names_carry_the_release_name() {
    let a = render("alpha", "ns-a", &[]);
    let b = render("beta", "ns-b", &[]);
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        let name_a = controller_doc(&a, kind)["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        let name_b = controller_doc(&b, kind)["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            name_a.contains("alpha") && name_b.contains("beta"),
            "{name_a} {name_b}"
        );
        assert_ne!(name_a, name_b);
    }
    // A release named after the chart is not doubled: `ferrolb-controller`.
    let plain = render("ferrolb", "lb-system", &[]);
    assert_eq!(
        controller_doc(&plain, "ClusterRole")["metadata"]["name"],
        "ferrolb-controller"
    );
}

/// `kubectl auth can-i` for `user`, panicking on anything but yes/no.
fn can(cp: &ControlPlane, user: &str, args: &[&str]) -> bool {
    rbac::can_i(cp, user, args).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn controller_service_account_has_least_privilege_on_a_real_apiserver() {
    let cp = cluster();
    let release = control_plane::unique_name("canirel");
    let ns = control_plane::unique_name("canins");
    let other = control_plane::unique_name("caniother");
    cp.kubectl_run(&["create", "namespace", &other]).unwrap();
    let applied = rbac::apply_rbac(cp, &release, &ns, &[]).unwrap();
    let kinds: Vec<&str> = applied.objects.iter().map(|o| o.kind.as_str()).collect();
    for kind in rbac::RBAC_KINDS {
        assert!(kinds.contains(&kind), "{kind} applied: {kinds:?}");
    }
    let user = applied.user("controller").unwrap();
    let lease = format!("leases/{CONTROLLER_LEASE}");
    // Wait for the authorizer to see the new bindings before judging any answer.
    rbac::wait_until_granted(
        cp,
        &user,
        &[&["list", "services", "-A"], &["update", &lease, "-n", &ns]],
    )
    .unwrap();

    let allowed: &[&[&str]] = &[
        &["list", "services", "-A"],
        &["watch", "services", "-A"],
        &["get", "services", "-n", &other],
        &["patch", "services", "--subresource=status", "-n", &other],
        &["update", "services", "--subresource=status", "-n", &other],
        &["list", "namespaces"],
        &["watch", "namespaces"],
        &["list", "ipaddresspools.ferrolb.io"],
        &["watch", "ipaddresspools.ferrolb.io"],
        &["patch", "ipaddresspools.ferrolb.io", "--subresource=status"],
        &["create", "events.events.k8s.io", "-n", &other],
        &["patch", "events.events.k8s.io", "-n", &other],
        &["create", "events", "-n", &other],
        &["create", "leases.coordination.k8s.io", "-n", &ns],
        &["get", &lease, "-n", &ns],
        &["update", &lease, "-n", &ns],
    ];
    let denied: &[&[&str]] = &[
        // The Service itself: only its status.
        &["create", "services", "-n", &other],
        &["update", "services", "-n", &other],
        &["patch", "services", "-n", &other],
        &["delete", "services", "-n", &other],
        // Nothing it has no use for.
        &["get", "secrets", "-n", &ns],
        &["list", "secrets", "-A"],
        &["create", "pods", "-n", &ns],
        &["list", "pods", "-A"],
        &["list", "nodes"],
        &["patch", "namespaces"],
        &["list", "l2advertisements.ferrolb.io"],
        // Pools are the user's: read and status only.
        &["create", "ipaddresspools.ferrolb.io"],
        &["update", "ipaddresspools.ferrolb.io"],
        &["patch", "ipaddresspools.ferrolb.io"],
        &["delete", "ipaddresspools.ferrolb.io"],
        &["list", "events", "-A"],
        // Its Lease, in its namespace only.
        &["update", &lease, "-n", &other],
        &["get", &lease, "-n", &other],
        &["create", "leases.coordination.k8s.io", "-n", &other],
        &[
            "update",
            "leases.coordination.k8s.io/someone-else",
            "-n",
            &ns,
        ],
        &["get", "leases.coordination.k8s.io/someone-else", "-n", &ns],
        &["delete", &lease, "-n", &ns],
        &["list", "leases.coordination.k8s.io", "-n", &ns],
        // No escalation.
        &["create", "clusterrolebindings"],
        &["create", "rolebindings", "-n", &ns],
        &["create", "serviceaccounts/token", "-n", &ns],
    ];
    let mut wrong = Vec::new();
    for args in allowed {
        if !can(cp, &user, args) {
            wrong.push(format!("should be allowed: {}", args.join(" ")));
        }
    }
    for args in denied {
        if can(cp, &user, args) {
            wrong.push(format!("should be denied: {}", args.join(" ")));
        }
    }
    assert!(wrong.is_empty(), "{user}:\n{}", wrong.join("\n"));
}

fn is_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> bool {
    match result {
        Err(kube::Error::Api(status)) => status.is_forbidden(),
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn minted_controller_identity_writes_status_and_its_lease_and_nothing_else() {
    let cp = cluster();
    let release = control_plane::unique_name("idrel");
    let ns = control_plane::unique_name("idns");
    let other = control_plane::unique_name("idother");
    let dir = control_plane::process_dir().join("rbac").join(&release);
    let kubeconfig = rbac::controller_kubeconfig(cp, &release, &ns, &dir).unwrap();
    assert!(kubeconfig.starts_with(&dir));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kubeconfig).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the kubeconfig holds a token: owner-only");
    }
    let admin = cp.client().await.unwrap();
    let sa = rbac::client(&kubeconfig).await.unwrap();
    cp.kubectl_run(&["create", "namespace", &other]).unwrap();

    // The token authenticates as the chart's ServiceAccount.
    let whoami = std::process::Command::new(ferrolb_tests::bins::binary("kubectl").unwrap())
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        format!("system:serviceaccount:{ns}:{release}-ferrolb-controller")
    );

    // Services: read everywhere; status and the allocation annotation in one server-side apply
    // to the status subresource, as the controller writes them.
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
    }))
    .unwrap();
    Api::<Service>::namespaced(admin.clone(), &other)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(sa.clone(), &other);
    let listed = Api::<Service>::all(sa.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        listed
            .items
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some("web"))
    );
    let status = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "annotations": {"ferrolb.io/ip-allocated-from-pool": "pool-a"}},
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.200", "ipMode": "VIP"}]}},
    });
    services
        .patch_status(
            "web",
            &PatchParams::apply("ferrolb-controller").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    let stored = Api::<Service>::namespaced(admin.clone(), &other)
        .get("web")
        .await
        .unwrap();
    assert_eq!(
        stored.metadata.annotations.unwrap_or_default()["ferrolb.io/ip-allocated-from-pool"],
        "pool-a",
        "an annotation applied through services/status is stored"
    );
    let ingress = stored
        .status
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .unwrap();
    assert_eq!(ingress[0].ip.as_deref(), Some("198.51.100.200"));

    // ... but never the Service itself.
    let spec_change = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"loadBalancerClass": "example.com/stolen"},
    });
    assert!(is_forbidden(
        services
            .patch(
                "web",
                &PatchParams::apply("ferrolb-controller").force(),
                &Patch::Apply(&spec_change)
            )
            .await
    ));
    assert!(is_forbidden(
        services.delete("web", &DeleteParams::default()).await
    ));
    assert!(is_forbidden(
        Api::<Secret>::namespaced(sa.clone(), &ns)
            .list(&ListParams::default())
            .await
    ));
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "example.com/none"}]},
    }))
    .unwrap();
    assert!(is_forbidden(
        Api::<Pod>::namespaced(sa.clone(), &ns)
            .create(&PostParams::default(), &pod)
            .await
    ));

    // Pools: read and status, not the pool itself.
    let pool_name = control_plane::unique_name("rbac-pool");
    let pool: IPAddressPool = serde_json::from_value(json!({
        "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": pool_name},
        "spec": {"addresses": ["198.51.100.240/29"]},
    }))
    .unwrap();
    Api::<IPAddressPool>::all(admin.clone())
        .create(&PostParams::default(), &pool)
        .await
        .unwrap();
    let pools: Api<IPAddressPool> = Api::all(sa.clone());
    assert!(pools.list(&ListParams::default()).await.is_ok());
    pools
        .patch_status(
            &pool_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 1}})),
        )
        .await
        .unwrap();
    assert!(is_forbidden(
        pools
            .patch(
                &pool_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"autoAssign": false}}))
            )
            .await
    ));
    assert!(is_forbidden(
        pools.delete(&pool_name, &DeleteParams::default()).await
    ));

    // Events (events.k8s.io/v1) in any namespace.
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": "web.ferrolb-test"},
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "reportingController": "ferrolb.io/controller",
        "reportingInstance": "ferrolb-controller-test",
        "action": "Allocate",
        "reason": "IPAllocated",
        "type": "Normal",
        "note": "Assigned 198.51.100.200 from pool-a",
        "regarding": {"apiVersion": "v1", "kind": "Service", "namespace": other, "name": "web"},
    }))
    .unwrap();
    Api::<Event>::namespaced(sa.clone(), &other)
        .create(&PostParams::default(), &event)
        .await
        .unwrap();

    // Its Lease: create, get and update in the release namespace; nothing elsewhere.
    let leases: Api<Lease> = Api::namespaced(sa.clone(), &ns);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": CONTROLLER_LEASE},
        "spec": {"holderIdentity": "replica-a", "leaseDurationSeconds": 15},
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut held = leases.get(CONTROLLER_LEASE).await.unwrap();
    held.spec.as_mut().unwrap().holder_identity = Some("replica-b".into());
    let replaced = leases
        .replace(CONTROLLER_LEASE, &PostParams::default(), &held)
        .await
        .unwrap();
    assert_eq!(
        replaced.spec.unwrap().holder_identity.as_deref(),
        Some("replica-b")
    );
    assert!(is_forbidden(leases.get("someone-else").await));
    assert!(is_forbidden(
        leases
            .delete(CONTROLLER_LEASE, &DeleteParams::default())
            .await
    ));
    assert!(is_forbidden(
        Api::<Lease>::namespaced(sa.clone(), &other)
            .create(&PostParams::default(), &lease)
            .await
    ));

    // Removing the chart's RBAC takes every right away again (deleting the ServiceAccount
    // also invalidates its token: 401 or 403, whichever the apiserver notices first).
    rbac::apply_rbac(cp, &release, &ns, &[])
        .unwrap()
        .remove(cp)
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match Api::<Service>::all(sa.clone())
            .list(&ListParams::default())
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 401 || s.code == 403 => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "still allowed 30 s after removing the RBAC: {other:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Standard base64 (with padding) decoded; panics on anything else.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut held = 0;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').bytes() {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .unwrap_or_else(|| panic!("not base64: {text}"));
        bits = (bits << 6) | v as u32;
        held += 6;
        if held >= 8 {
            held -= 8;
            out.push((bits >> held) as u8);
        }
    }
    out
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

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(
        c["image"],
        format!("ghcr.io/ferrolb/ferrolb:{}", chart_app_version())
    );
    assert_eq!(strings(&c["command"]), ["ferrolb-speaker", "run"]);
    assert_eq!(
        strings(&c["args"]),
        [
            "--node-name=$(NODE_NAME)",
            "--memberlist-key-file=/etc/ferrolb/memberlist/key",
            "--memberlist-port=7946",
            "--metrics-addr=0.0.0.0:7473",
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
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "monitoring");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "monitoring");
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
    let cp = cluster();
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

#[test]
fn rendered_speaker_rbac_is_exactly_the_least_privilege_rules() {
    let docs = render("rules", "lb-system", &[]);
    let mut want = vec![
        rule(&[""], &["services"], &[], &["get", "list", "watch"]),
        rule(&[""], &["services/status"], &[], &["patch"]),
        rule(
            &["discovery.k8s.io"],
            &["endpointslices"],
            &[],
            &["get", "list", "watch"],
        ),
        rule(&[""], &["nodes"], &[], &["get", "list", "watch"]),
        rule(
            &["ferrolb.io"],
            &["ipaddresspools", "l2advertisements"],
            &[],
            &["get", "list", "watch"],
        ),
        rule(&["events.k8s.io"], &["events"], &[], &["create"]),
        rule(&[""], &["events"], &[], &["create"]),
    ];
    want.sort();
    assert_eq!(rules(speaker_doc(&docs, "ClusterRole")), want);
    // No namespaced rights at all.
    assert!(!docs.iter().any(|d| {
        matches!(d["kind"].as_str(), Some("Role" | "RoleBinding"))
            && d["metadata"]["labels"]["app.kubernetes.io/component"] == "speaker"
    }));
    let binding = speaker_doc(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(
        binding["roleRef"]["name"],
        speaker_doc(&docs, "ClusterRole")["metadata"]["name"]
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "rules-ferrolb-speaker", "namespace": "lb-system"}])
    );
    assert_ne!(
        binding["metadata"]["name"],
        controller_doc(&docs, "ClusterRoleBinding")["metadata"]["name"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn speaker_service_account_has_least_privilege_on_a_real_apiserver() {
    let cp = cluster();
    let release = control_plane::unique_name("spkrel");
    let ns = control_plane::unique_name("spkns");
    let other = control_plane::unique_name("spkother");
    let dir = control_plane::process_dir().join("rbac").join(&release);
    let kubeconfig = rbac::speaker_kubeconfig(cp, &release, &ns, &dir).unwrap();
    cp.kubectl_run(&["create", "namespace", &other]).unwrap();
    let user = rbac::service_account_user(&ns, &format!("{release}-ferrolb-speaker"));

    let allowed: &[&[&str]] = &[
        &["list", "services", "-A"],
        &["watch", "services", "-A"],
        &["get", "services", "-n", &other],
        &["patch", "services", "--subresource=status", "-n", &other],
        &["list", "endpointslices.discovery.k8s.io", "-A"],
        &["watch", "endpointslices.discovery.k8s.io", "-A"],
        &["list", "nodes"],
        &["watch", "nodes"],
        &["get", "nodes"],
        &["list", "ipaddresspools.ferrolb.io"],
        &["watch", "ipaddresspools.ferrolb.io"],
        &["list", "l2advertisements.ferrolb.io"],
        &["watch", "l2advertisements.ferrolb.io"],
        &["create", "events.events.k8s.io", "-n", &other],
        &["create", "events", "-n", &other],
    ];
    let denied: &[&[&str]] = &[
        // Services: a condition in the status, by patch; nothing else.
        &["create", "services", "-n", &other],
        &["update", "services", "-n", &other],
        &["patch", "services", "-n", &other],
        &["delete", "services", "-n", &other],
        &["update", "services", "--subresource=status", "-n", &other],
        // Its key is a mounted file.
        &["get", "secrets", "-n", &ns],
        &["list", "secrets", "-A"],
        &["create", "pods", "-n", &ns],
        &["list", "pods", "-A"],
        &["patch", "nodes"],
        &["update", "nodes", "--subresource=status"],
        &["create", "endpointslices.discovery.k8s.io", "-n", &other],
        // Pools and advertisements are the user's, pool status the controller's.
        &["create", "ipaddresspools.ferrolb.io"],
        &["patch", "ipaddresspools.ferrolb.io"],
        &["delete", "ipaddresspools.ferrolb.io"],
        &["patch", "ipaddresspools.ferrolb.io", "--subresource=status"],
        &["create", "l2advertisements.ferrolb.io"],
        &["patch", "l2advertisements.ferrolb.io"],
        &["list", "events", "-A"],
        &["list", "namespaces"],
        &["create", "leases.coordination.k8s.io", "-n", &ns],
        // No escalation.
        &["create", "clusterrolebindings"],
        &["create", "serviceaccounts/token", "-n", &ns],
    ];
    let mut wrong = Vec::new();
    for args in allowed {
        if !can(cp, &user, args) {
            wrong.push(format!("should be allowed: {}", args.join(" ")));
        }
    }
    for args in denied {
        if can(cp, &user, args) {
            wrong.push(format!("should be denied: {}", args.join(" ")));
        }
    }
    assert!(wrong.is_empty(), "{user}:\n{}", wrong.join("\n"));

    // Real requests under the minted token: the status condition is written, the rest refused.
    let admin = cp.client().await.unwrap();
    let sa = rbac::client(&kubeconfig).await.unwrap();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
    }))
    .unwrap();
    Api::<Service>::namespaced(admin.clone(), &other)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(sa.clone(), &other);
    let condition = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "status": {"conditions": [{
            "type": "ferrolb.io/Announced", "status": "True", "reason": "Announcing",
            "message": "node1 answers ARP for 198.51.100.200",
            "lastTransitionTime": "2025-01-01T00:00:00Z",
        }]},
    });
    services
        .patch_status(
            "web",
            &PatchParams::apply("ferrolb-speaker").force(),
            &Patch::Apply(&condition),
        )
        .await
        .unwrap();
    let stored = services.get("web").await.unwrap();
    assert_eq!(
        stored.status.unwrap().conditions.unwrap()[0].type_,
        "ferrolb.io/Announced"
    );
    assert!(is_forbidden(
        services
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"loadBalancerClass": "example.com/stolen"}}))
            )
            .await
    ));
    assert!(is_forbidden(
        Api::<Secret>::namespaced(sa.clone(), &ns)
            .list(&ListParams::default())
            .await
    ));
    assert!(
        Api::<IPAddressPool>::all(sa.clone())
            .list(&ListParams::default())
            .await
            .is_ok()
    );
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": "web.ferrolb-speaker-test"},
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "reportingController": "ferrolb.io/speaker",
        "reportingInstance": "ferrolb-speaker-node1",
        "action": "Announce",
        "reason": "Announcing",
        "type": "Normal",
        "note": "node1 answers ARP for 198.51.100.200",
        "regarding": {"apiVersion": "v1", "kind": "Service", "namespace": other, "name": "web"},
    }))
    .unwrap();
    Api::<Event>::namespaced(sa.clone(), &other)
        .create(&PostParams::default(), &event)
        .await
        .unwrap();
}
