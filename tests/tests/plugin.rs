//! `kubectl ferrolb` against the real apiserver, the real controller and, where the speakers'
//! word matters, real speakers in lab namespaces: each explanation is brought about for real,
//! and the plugin's sentence must name the real cause and the objects involved.

use std::path::PathBuf;

use anyhow::{Context, Result};
use ferrolb_crds::contract::annotation::{ALLOW_SHARED_IP, LOAD_BALANCER_IPS};
use ferrolb_crds::contract::label::{EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS, SERVICE_NAME};
use ferrolb_crds::contract::reason;
use ferrolb_tests::control_plane;
use ferrolb_tests::l2lab::Rig;
use ferrolb_tests::scenario::Scenario;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

/// What the plugin printed and how it exited.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
}

fn binary() -> Result<PathBuf> {
    ferrolb_tests::bins::kubectl_ferrolb()
}

/// `kubectl-ferrolb <args>` with the admin kubeconfig (through `KUBECONFIG`, as kubectl users
/// have it) and no colour.
async fn plugin(args: &[&str]) -> Result<Run> {
    let kubeconfig = control_plane::shared().kubeconfig().to_path_buf();
    let out = tokio::process::Command::new(binary()?)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("NO_COLOR", "1")
        .output()
        .await
        .context("running kubectl-ferrolb")?;
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    };
    eprintln!(
        "kubectl-ferrolb {}: exit {}\n{}{}",
        args.join(" "),
        run.code,
        run.stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(run)
}

/// `explain svc/<name> -n <ns>` once the Service shows `reason` in a condition.
async fn explain_after(s: &Scenario, name: &str, reason: &str) -> Result<Run> {
    s.wait_reason(name, reason).await?;
    plugin(&["explain", &format!("svc/{name}"), "-n", &s.ns]).await
}

fn assert_says(run: &Run, code: i32, parts: &[&str]) {
    assert_eq!(run.code, code, "exit code; output:\n{}", run.stdout);
    for p in parts {
        assert!(
            run.stdout.contains(p),
            "{p:?} missing from:\n{}",
            run.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_exhausted_pool() -> Result<()> {
    let s = Scenario::start("plugin-exhausted").await?;
    s.pool("tiny", json!({"addresses": ["198.51.100.77/32"]}))
        .await?;
    s.service("first", json!({})).await?;
    s.wait_any_ip("first").await?;
    s.service("second", json!({})).await?;
    let run = explain_after(&s, "second", reason::POOL_EXHAUSTED).await?;
    assert_says(
        &run,
        3,
        &[
            &format!("Service {}/second: no EXTERNAL-IP", s.ns),
            "pool tiny has 0 IPv4 free",
            &format!("({}, since ", reason::POOL_EXHAUSTED),
            "fix: add addresses to the pool's spec.addresses",
        ],
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_pool_that_does_not_serve_the_namespace() -> Result<()> {
    let s = Scenario::start("plugin-nomatch").await?;
    s.pool(
        "elsewhere-only",
        json!({"addresses": ["198.51.100.80/30"], "serviceAllocation": {"namespaces": ["elsewhere"]}}),
    )
    .await?;
    s.service("web", json!({})).await?;
    let run = explain_after(&s, "web", reason::NO_POOL_MATCHES).await?;
    assert_says(
        &run,
        3,
        &[
            "pool elsewhere-only",
            &s.ns,
            &format!("({}, since ", reason::NO_POOL_MATCHES),
            "fix: or widen a pool's spec.serviceAllocation",
        ],
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_service_holding_the_requested_ip() -> Result<()> {
    let s = Scenario::start("plugin-taken").await?;
    s.pool("lan", json!({"addresses": ["198.51.100.84/30"]}))
        .await?;
    s.service("holder", json!({})).await?;
    let ip = s.wait_any_ip("holder").await?[0].clone();
    s.service(
        "wants-it",
        json!({"metadata": {"annotations": {(LOAD_BALANCER_IPS): ip}}}),
    )
    .await?;
    let run = explain_after(&s, "wants-it", reason::IP_IN_USE).await?;
    assert_says(
        &run,
        3,
        &[
            &format!("{ip} is held by {}/holder", s.ns),
            &format!("({}, since ", reason::IP_IN_USE),
            ALLOW_SHARED_IP,
        ],
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_port_two_sharing_services_both_use() -> Result<()> {
    let s = Scenario::start("plugin-ports").await?;
    s.pool("lan", json!({"addresses": ["198.51.100.88/30"]}))
        .await?;
    let shared = json!({"metadata": {"annotations": {(ALLOW_SHARED_IP): "team"}}});
    s.service("one", shared.clone()).await?;
    let ip = s.wait_any_ip("one").await?[0].clone();
    let mut two = shared;
    two["metadata"]["annotations"][LOAD_BALANCER_IPS] = json!(ip);
    s.service("two", two).await?;
    let run = explain_after(&s, "two", reason::PORT_COLLISION).await?;
    assert_says(
        &run,
        3,
        &[
            &format!("{}/one", s.ns),
            &format!("({}, since ", reason::PORT_COLLISION),
            "fix: Services sharing an address must use different ports",
        ],
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_leaves_another_class_to_its_implementation() -> Result<()> {
    let s = Scenario::start("plugin-class").await?;
    s.pool("lan", json!({"addresses": ["198.51.100.92/30"]}))
        .await?;
    s.service(
        "theirs",
        json!({"spec": {"loadBalancerClass": "example.com/other-lb"}}),
    )
    .await?;
    let run = plugin(&["explain", "theirs", "-n", &s.ns, "-o", "json"]).await?;
    assert_eq!(run.code, 3);
    let v: Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(v["verdict"], "OtherClass");
    let sentence = v["findings"][0]["sentence"].as_str().unwrap_or_default();
    assert!(
        sentence.contains("spec.loadBalancerClass example.com/other-lb"),
        "{sentence}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_no_l2advertisement_selects_the_pool() -> Result<()> {
    let rig = Rig::start("plugin-noad", 2, &[], false).await?;
    let s = &rig.scenario;
    s.pool("unadvertised", json!({"addresses": ["198.51.100.96/30"]}))
        .await?;
    s.service("web", json!({})).await?;
    s.wait_any_ip("web").await?;
    rig.wait_announced("web", "False").await?;
    let run = plugin(&["explain", "svc/web", "-n", &s.ns]).await?;
    assert_says(
        &run,
        3,
        &[
            "no L2Advertisement selects IPAddressPool unadvertised",
            "fix: apply an L2Advertisement (or a BGPAdvertisement) with spec.ipAddressPools: [unadvertised]",
        ],
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_why_each_node_may_not_announce() -> Result<()> {
    let rig = Rig::start("plugin-nodes", 2, &[], false).await?;
    let s = &rig.scenario;
    // node1 is excluded by its label, node2 is outside the advertisement's node selector.
    rig.pool_and_advertisement(
        "lan",
        &["198.51.100.100/30"],
        json!({"nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": "node1"}}]}),
    )
    .await?;
    Api::<Node>::all(s.client.clone())
        .patch(
            "node1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS: "true"}}})),
        )
        .await?;
    s.service("web", json!({})).await?;
    s.wait_any_ip("web").await?;
    rig.wait_announced("web", "False").await?;
    let run = plugin(&["explain", "svc/web", "-n", &s.ns]).await?;
    assert_says(
        &run,
        3,
        &[
            &format!("node1: the node has the label {EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS}"),
            "node2: no L2Advertisement of the pool selects the node",
            "fix: remove the label from a node",
            "fix: widen the advertisement's spec.nodeSelectors",
        ],
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_a_local_service_has_no_ready_endpoint() -> Result<()> {
    let rig = Rig::start("plugin-local", 2, &[], false).await?;
    let s = &rig.scenario;
    rig.pool_and_advertisement("lan", &["198.51.100.104/30"], json!({}))
        .await?;
    s.service("web", json!({"spec": {"externalTrafficPolicy": "Local"}}))
        .await?;
    s.wait_any_ip("web").await?;
    rig.wait_announced("web", "False").await?;
    let run = plugin(&["explain", "svc/web", "-n", &s.ns]).await?;
    assert_says(
        &run,
        3,
        &[
            "externalTrafficPolicy is Local and the node has no ready endpoint",
            &format!(
                "kubectl get endpointslices -n {} -l {SERVICE_NAME}=web",
                s.ns
            ),
        ],
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_and_status_show_who_answers_since_when() -> Result<()> {
    let rig = Rig::start("plugin-serving", 2, &[], false).await?;
    let s = &rig.scenario;
    rig.pool_and_advertisement(
        "lan",
        &["198.51.100.108/30", "2001:db8:1::108/126"],
        json!({}),
    )
    .await?;
    s.service("web", json!({})).await?;
    let ip = s.wait_any_ip("web").await?[0].clone();
    let node = rig.wait_announcer("web", None).await?;
    let run = plugin(&["explain", "svc/web", "-n", &s.ns]).await?;
    assert_says(
        &run,
        0,
        &[
            &format!("Service {}/web: serving", s.ns),
            &format!("has {ip} ({ip} from pool lan"),
            &format!("Who answers: {node} announces {ip} on eth0 (since "),
        ],
    );

    // The controller writes pool counts after allocating (batched); status reads what is there.
    s.wait_pool("lan", "1 IPv4 address held", |p| {
        p.status.as_ref().is_some_and(|st| st.assigned_ipv4.0 == 1)
    })
    .await?;
    let run = plugin(&["status", "-o", "json"]).await?;
    let v: Value = serde_json::from_str(&run.stdout)?;
    assert_eq!(v["controller"]["live"], true, "{v:#}");
    assert_eq!(
        v["controller"]["lease"],
        "ferrolb-system/ferrolb-controller"
    );
    let pool = v["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "lan")
        .context("pool lan in status")?;
    assert_eq!(pool["ipv4"], json!({"used": 1, "free": 3}), "{pool:#}");
    assert_eq!(pool["ipv6"], json!({"used": 0, "free": 4}), "{pool:#}");
    let svc = v["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["service"] == format!("{}/web", s.ns))
        .context("the Service in status")?;
    assert_eq!(svc["addresses"], json!([ip]));
    assert_eq!(svc["pool"], "lan");
    assert_eq!(svc["serving"], true);
    assert!(
        svc["announced"]
            .as_str()
            .is_some_and(|a| a.starts_with(&format!("{node} announces {ip}"))),
        "{svc:#}"
    );
    // The speakers here are lab processes, not pods: none is listed, so status is not healthy.
    assert_eq!(run.code, 3);
    let text = plugin(&["status"]).await?;
    assert_says(
        &text,
        3,
        &[
            "Controller: ",
            "leads (Lease ferrolb-system/ferrolb-controller)",
            "lan   ",
            "1/4",
            &format!("{}/web", s.ns),
        ],
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_service_or_a_bad_name_is_an_error_not_a_verdict() -> Result<()> {
    let s = Scenario::start("plugin-missing").await?;
    let run = plugin(&["explain", "svc/nothing-here", "-n", &s.ns]).await?;
    assert_eq!(run.code, 1, "{run:?}");
    let run = plugin(&["explain", "pod/web"]).await?;
    assert_eq!(run.code, 2, "only Services: {run:?}");
    let run = plugin(&["explain"]).await?;
    assert_eq!(run.code, 2, "clap's usage error: {run:?}");
    Ok(())
}
