//! Debian packages the tests use, installed with apt-get when missing.

use std::process::Command;

use anyhow::{Result, bail};

/// Package, and a command it provides (checked on PATH), or an absolute path it installs.
const PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("iputils-ping", "ping"),
    ("nftables", "nft"),
    ("arping", "arping"),
    ("ndisc6", "ndisc6"),
    ("tcpdump", "tcpdump"),
    ("tshark", "tshark"),
    ("curl", "curl"),
    ("procps", "ps"),
    // tests/tests/image.rs reads the image archives back with it.
    ("skopeo", "skopeo"),
    // Real nodes (ferrolb_tests::node): the OCI runtime under containerd, the pods' CNI plugins,
    // and what kube-proxy's iptables mode and conntrack clean-up call.
    ("runc", "runc"),
    ("containernetworking-plugins", "/usr/lib/cni/bridge"),
    ("iptables", "iptables"),
    ("conntrack", "conntrack"),
    // BGP peers of the speakers in the lab's router namespace (ferrolb_tests::router).
    ("frr", "/usr/lib/frr/bgpd"),
    ("bird2", "bird"),
];

fn missing() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .filter(|(_, cmd)| !installed(cmd))
        .map(|(pkg, _)| *pkg)
        .collect()
}

fn installed(cmd: &str) -> bool {
    if cmd.starts_with('/') {
        return std::path::Path::new(cmd).is_file();
    }
    ferrolb_tests::bins::which(cmd).is_some() || in_sbin(cmd)
}

fn in_sbin(cmd: &str) -> bool {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .any(|d| std::path::Path::new(d).join(cmd).is_file())
}

/// Installs missing packages (or, with `install` false, fails naming them).
pub fn ensure(install: bool) -> Result<()> {
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    if !install {
        bail!(
            "missing Debian packages: {} (apt-get install them, or drop --no-install)",
            missing.join(" ")
        );
    }
    eprintln!("==> installing Debian packages: {}", missing.join(" "));
    crate::run_step(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    crate::run_step(
        "apt-get install",
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let still = self::missing();
    if !still.is_empty() {
        bail!(
            "apt-get install finished but these are still missing: {}",
            still.join(" ")
        );
    }
    Ok(())
}

/// What every testbed command needs first: the Debian packages ([`ensure`]) and the Go-built
/// binaries (built once per machine, with progress), reporting whether the build was cached.
pub fn ensure_testbed(install: bool) -> Result<()> {
    ensure(install)?;
    match ferrolb_tests::bins::build_if_missing()? {
        Some(took) => eprintln!(
            "==> Go-built components: cold build took {:.0} s",
            took.as_secs_f64()
        ),
        None => eprintln!(
            "==> Go-built components: cached in {}",
            ferrolb_tests::bins::bin_dir()?.display()
        ),
    }
    Ok(())
}
