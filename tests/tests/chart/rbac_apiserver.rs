//! The chart's RBAC applied to a real apiserver: `kubectl auth can-i` for each right the
//! controller and the speakers need and many they must not have, then real requests under
//! tokens minted for their ServiceAccounts.

use ferrolb_crds::contract::annotation::ALLOCATED_FROM_POOL;
use ferrolb_crds::contract::{action, condition, field_manager, reason};
use ferrolb_crds::pool::IPAddressPool;
use ferrolb_tests::control_plane::{self, ControlPlane};
use ferrolb_tests::rbac::{self, CONTROLLER_LEASE};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// Asks `kubectl auth can-i` as `user` for each of `allowed` and `denied` (can-i argument lists)
/// and fails listing every wrong answer; panics on anything but yes/no.
fn assert_rights(cp: &ControlPlane, user: &str, allowed: &[&[&str]], denied: &[&[&str]]) {
    let can = |args: &[&str]| rbac::can_i(cp, user, args).unwrap_or_else(|e| panic!("{e:#}"));
    let mut wrong = Vec::new();
    for args in allowed {
        if !can(args) {
            wrong.push(format!("should be allowed: {}", args.join(" ")));
        }
    }
    for args in denied {
        if can(args) {
            wrong.push(format!("should be denied: {}", args.join(" ")));
        }
    }
    assert!(wrong.is_empty(), "{user}:\n{}", wrong.join("\n"));
}

/// Creates LoadBalancer Service `web` (port 80) in `namespace` as `admin`; returns the Services
/// of `namespace` as `identity` sees them.
async fn create_web_service(admin: &Client, identity: &Client, namespace: &str) -> Api<Service> {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
    }))
    .unwrap();
    Api::<Service>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    Api::namespaced(identity.clone(), namespace)
}

/// Who reports an Event: `reportingController`, `reportingInstance`.
type Reporter<'a> = (&'a str, &'a str);

/// Creates an events.k8s.io/v1 Event `name` about Service `web` in `namespace` as `identity`:
/// `(action, reason, note)` of type Normal.
async fn create_event(
    identity: &Client,
    namespace: &str,
    name: &str,
    (controller, instance): Reporter<'_>,
    (action, reason, note): (&str, &str, &str),
) {
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": name},
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "reportingController": controller,
        "reportingInstance": instance,
        "action": action,
        "reason": reason,
        "type": "Normal",
        "note": note,
        "regarding": {"apiVersion": "v1", "kind": "Service", "namespace": namespace, "name": "web"},
    }))
    .unwrap();
    Api::<Event>::namespaced(identity.clone(), namespace)
        .create(&PostParams::default(), &event)
        .await
        .unwrap();
}

#[test]
fn controller_service_account_has_least_privilege_on_a_real_apiserver() {
    let cp = control_plane::shared_with_crds();
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
    assert_rights(cp, &user, allowed, denied);
}

fn is_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> bool {
    match result {
        Err(kube::Error::Api(status)) => status.is_forbidden(),
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn minted_controller_identity_writes_status_and_its_lease_and_nothing_else() {
    let cp = control_plane::shared_with_crds();
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
    let services = create_web_service(&admin, &sa, &other).await;
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
        "metadata": {"name": "web", "annotations": {ALLOCATED_FROM_POOL: "pool-a"}},
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.200", "ipMode": "VIP"}]}},
    });
    services
        .patch_status(
            "web",
            &PatchParams::apply(field_manager::CONTROLLER).force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    let stored = Api::<Service>::namespaced(admin.clone(), &other)
        .get("web")
        .await
        .unwrap();
    assert_eq!(
        stored.metadata.annotations.unwrap_or_default()[ALLOCATED_FROM_POOL],
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
                &PatchParams::apply(field_manager::CONTROLLER).force(),
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
    create_event(
        &sa,
        &other,
        "web.ferrolb-test",
        ("ferrolb.io/controller", "ferrolb-controller-test"),
        (
            action::ALLOCATE,
            reason::IP_ALLOCATED,
            "Assigned 198.51.100.200 from pool-a",
        ),
    )
    .await;

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

#[tokio::test(flavor = "multi_thread")]
async fn speaker_service_account_has_least_privilege_on_a_real_apiserver() {
    let cp = control_plane::shared_with_crds();
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
        &["watch", "bgppeers.ferrolb.io"],
        &["watch", "bgpadvertisements.ferrolb.io"],
        &["watch", "communities.ferrolb.io"],
        &["watch", "bfdprofiles.ferrolb.io"],
        &["patch", "bgppeers.ferrolb.io", "--subresource=status"],
        &["get", "secrets", "-n", &ns],
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
        // Secrets: by name in its own namespace only (BGP passwords); its key is a file.
        &["list", "secrets", "-n", &ns],
        &["watch", "secrets", "-n", &ns],
        &["get", "secrets", "-n", &other],
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
        &["create", "bgppeers.ferrolb.io"],
        &["patch", "bgpadvertisements.ferrolb.io"],
        &["list", "events", "-A"],
        &["list", "namespaces"],
        &["create", "leases.coordination.k8s.io", "-n", &ns],
        // No escalation.
        &["create", "clusterrolebindings"],
        &["create", "serviceaccounts/token", "-n", &ns],
    ];
    assert_rights(cp, &user, allowed, denied);

    // Real requests under the minted token: the status condition is written, the rest refused.
    let admin = cp.client().await.unwrap();
    let sa = rbac::client(&kubeconfig).await.unwrap();
    let services = create_web_service(&admin, &sa, &other).await;
    let condition = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "status": {"conditions": [{
            "type": condition::ANNOUNCED, "status": "True", "reason": "Announcing",
            "message": "node1 answers ARP for 198.51.100.200",
            "lastTransitionTime": "2025-01-01T00:00:00Z",
        }]},
    });
    services
        .patch_status(
            "web",
            &PatchParams::apply(field_manager::SPEAKER).force(),
            &Patch::Apply(&condition),
        )
        .await
        .unwrap();
    let stored = services.get("web").await.unwrap();
    assert_eq!(
        stored.status.unwrap().conditions.unwrap()[0].type_,
        condition::ANNOUNCED
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
    create_event(
        &sa,
        &other,
        "web.ferrolb-speaker-test",
        ("ferrolb.io/speaker", "ferrolb-speaker-node1"),
        (
            action::ANNOUNCE,
            "Announcing",
            "node1 answers ARP for 198.51.100.200",
        ),
    )
    .await;
}
