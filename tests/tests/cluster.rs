//! `cargo xtask cluster up|down` (through the library functions it calls). In a test binary of
//! its own: while it runs, a cluster-up lab exists and other lab tests must not.

use ferrolb_tests::{bins, cluster, control_plane, lab, process::run};

fn namespaces() -> String {
    run(std::process::Command::new("ip").args(["netns", "list"])).unwrap()
}

#[test]
fn cluster_up_serves_a_ready_lab_and_down_removes_everything() {
    let dir = control_plane::process_dir().join("cluster");
    let up = cluster::up(&dir, 2, 0).unwrap();

    // The env file is enough to use the cluster from a shell.
    let env = std::fs::read_to_string(&up.env_file).unwrap();
    for line in [
        "export KUBECONFIG=",
        "export PATH=",
        "FERROLB_LAB_NODES=\"node1 node2\"",
        "FERROLB_LAB_CLIENT=client",
    ] {
        assert!(env.contains(line), "{line} missing from:\n{env}");
    }
    assert!(env.contains(&bins::bin_dir().unwrap().display().to_string()));
    let script = format!(
        ". {} && kubectl get nodes -o name && which helm",
        up.env_file.display()
    );
    let out = run(std::process::Command::new("bash").args(["-c", &script])).unwrap();
    assert!(
        out.contains("node/node1") && out.contains("node/node2") && out.contains("/helm"),
        "{out}"
    );
    // Processes outlive the call that started them, and another lab is refused meanwhile.
    assert!(
        up.pids
            .iter()
            .all(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
    );
    let refused = ferrolb_tests::Lab::create(1).unwrap_err();
    assert!(
        format!("{refused:#}").contains("cluster down"),
        "{refused:#}"
    );
    assert!(namespaces().contains("node2"));

    cluster::down().unwrap();
    for p in &up.pids {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        // Gone, or a zombie awaiting its (re)parent: either way no longer running.
        assert!(
            status.is_empty() || status.contains("State:\tZ"),
            "pid {p} still runs:\n{status}"
        );
    }
    let left = namespaces();
    assert!(
        !left
            .lines()
            .any(|l| l.starts_with("node") || l.starts_with("client")),
        "{left}"
    );
    assert!(
        std::process::Command::new("ip")
            .args(["link", "show", lab::BRIDGE])
            .output()
            .unwrap()
            .status
            .code()
            != Some(0)
    );
    assert!(!std::path::Path::new(lab::CLUSTER_MARKER).exists());
}
