//! The chart's values: `helm lint --strict`, values.schema.json typing and describing every
//! value, wrong values failing the render with helm's message, accepted ones rendering as given,
//! and the `--set` examples of the docs doing what the docs say.

use ferrolb_tests::rbac;
use serde_json::{Value, json};

use crate::{controller_doc, speaker_doc, strings};

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
