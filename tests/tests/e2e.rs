//! ferrolb as users run it: the chart installed with `helm install` on real nodes (kubelet,
//! containerd, kube-proxy), locally built images, traffic from the LAN's client through the real
//! kube-proxy. The scenarios live in `ferrolb_tests::e2e::scenarios`; this file runs them on the
//! testbed in each kube-proxy mode this kernel has (iptables, nftables; no IPVS here), and BGP
//! mode with a real router ([`ferrolb_tests::e2e::bgp`]), and the move from MetalLB
//! ([`ferrolb_tests::e2e::migration`]).

use ferrolb_tests::control_plane::process_dir;
use ferrolb_tests::e2e::scenarios::{self, Families};
use ferrolb_tests::e2e::testbed::Testbed;
use ferrolb_tests::node::ProxyMode;

/// A testbed in its own directory (`name`: tests run at once, and a testbed empties its
/// directory first).
fn testbed(name: &str, mode: ProxyMode) -> Testbed {
    let dir = process_dir().join(format!("e2e-{name}"));
    Testbed::start(&dir, 3, mode).unwrap_or_else(|e| panic!("starting the testbed: {e:#}"))
}

/// The whole journey with kube-proxy in nftables mode: install, dual-stack Service, Local
/// policy, speaker pod deletion, upgrade, node power-off, uninstall.
#[test]
fn helm_install_serves_services_through_kube_proxy_nftables() {
    let mut tb = testbed("nftables", ProxyMode::Nftables);
    match scenarios::everything(&mut tb) {
        Ok(report) => eprintln!("e2e report: {report:?}"),
        Err(e) => panic!(
            "{e:#}\n{}\n{}",
            scenarios::pods_summary(&tb),
            tb.diagnostics()
        ),
    }
}

/// The same Services with kube-proxy in iptables mode: a missing image is reported and fixed by
/// `helm upgrade`, then dual-stack and the Local policy.
#[test]
fn helm_install_serves_services_through_kube_proxy_iptables() {
    let tb = testbed("iptables", ProxyMode::Iptables);
    let result = (|| {
        scenarios::check_missing_image_is_reported(&tb)?;
        scenarios::apply_pool(&tb)?;
        scenarios::deploy_echo(&tb, "echo", 2, None)?;
        scenarios::expose(&tb, "echo", "echo", Families::Dual, false)?;
        scenarios::check_dual_stack(&tb, "echo")?;
        scenarios::check_local_traffic_policy(&tb)
    })();
    if let Err(e) = result {
        panic!(
            "{e:#}\n{}\n{}",
            scenarios::pods_summary(&tb),
            tb.diagnostics()
        );
    }
}

/// BGP mode on the same kind of cluster: speaker pods peer with a real FRR router (BFD,
/// graceful restart) and the remote client behind it reaches the Services through the nodes.
#[test]
fn helm_install_announces_services_to_a_router_over_bgp() {
    let mut tb = testbed("bgp", ProxyMode::Nftables);
    match ferrolb_tests::e2e::bgp::journey(&mut tb) {
        Ok(report) => eprintln!("e2e BGP report: {report:?}"),
        Err(e) => panic!(
            "{e:#}\n{}\n{}",
            scenarios::pods_summary(&tb),
            tb.diagnostics()
        ),
    }
}

/// The move from MetalLB (its own controller and speakers, built from its Go module, installed
/// from its own manifest) to ferrolb, every `sh` block of docs/migrate-from-metallb.md run in
/// order: no Service's IP changes or goes missing for a moment, no request is answered twice,
/// and MetalLB's annotations keep working afterwards.
#[test]
fn migration_from_metallb_keeps_every_ip() {
    let tb = testbed("migration", ProxyMode::Nftables);
    let scratch = process_dir().join("migration-reader");
    match ferrolb_tests::e2e::migration::journey(&tb, &scratch) {
        Ok(report) => eprintln!("e2e migration report: {report:?}"),
        Err(e) => panic!(
            "{e:#}\n{}\n{}",
            scenarios::pods_summary(&tb),
            tb.diagnostics()
        ),
    }
}
