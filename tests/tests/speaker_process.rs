//! The speaker harness (`ferrolb_tests::speaker`) with the real `ferrolb-speaker` binary: it runs
//! in its node namespace under the chart's RBAC, unprivileged with CAP_NET_RAW only, serves its
//! probes over the lab bridge, and stops on SIGTERM or dies on SIGKILL.

use std::path::PathBuf;
use std::time::Duration;

use ferrolb_tests::control_plane::{self};
use ferrolb_tests::speaker::{self, Speaker, SpeakerOptions, UNPRIVILEGED_ID};
use ferrolb_tests::{Lab, rbac};

/// A kubeconfig for the chart's speaker ServiceAccount and a fresh memberlist key, in a
/// directory of this test's own.
fn identity(prefix: &str) -> (PathBuf, PathBuf, PathBuf) {
    let cp = control_plane::shared_with_crds();
    let release = control_plane::unique_name(prefix);
    let dir = control_plane::process_dir().join("speakers").join(&release);
    let kubeconfig =
        rbac::speaker_kubeconfig(cp, &release, &control_plane::unique_name("spk"), &dir).unwrap();
    let key = dir.join("memberlist.key");
    speaker::write_key_file(&key).unwrap();
    (dir, kubeconfig, key)
}

/// A `/proc/<pid>/status` field, e.g. `CapEff`.
fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).map_or(true, |s| s.contains("State:\tZ"))
}

#[tokio::test(flavor = "multi_thread")]
async fn unprivileged_speaker_holds_only_cap_net_raw_in_its_node_namespace() {
    let cp = control_plane::shared_with_crds();
    let (dir, kubeconfig, key) = identity("unpriv");
    let lab = Lab::create(1).unwrap();
    lab.register_nodes(&cp.client().await.unwrap())
        .await
        .unwrap();
    let node = &lab.nodes()[0];
    let mut opts = SpeakerOptions::new(node, &kubeconfig, &key, dir.join("speaker-node1.log"));
    opts.unprivileged = true;
    let mut speaker = Speaker::start(&opts).unwrap();
    speaker
        .wait_ready(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(speaker.node(), "node1");
    assert_eq!(speaker.addr().to_string(), "198.51.100.11:7473");

    // uid/gid 65534 everywhere, CAP_NET_RAW (bit 13) in every set and nothing else, no way up.
    let pid = speaker.pid();
    let id = UNPRIVILEGED_ID.to_string();
    for field in ["Uid", "Gid"] {
        let ids = status_field(pid, field);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        assert_eq!(ids, [id.as_str(); 4], "{field}");
    }
    assert_eq!(status_field(pid, "Groups"), "");
    for set in ["CapPrm", "CapEff", "CapInh", "CapAmb", "CapBnd"] {
        assert_eq!(status_field(pid, set), "0000000000002000", "{set}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    // The process is the speaker itself, in the node's network namespace.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, speaker::binary().unwrap().canonicalize().unwrap());
    let netns = ferrolb_tests::process::run(std::process::Command::new("ip").args([
        "netns",
        "identify",
        &pid.to_string(),
    ]))
    .unwrap();
    assert_eq!(netns.trim(), "node1");

    // Responder threads: per protocol on eth0, one per CPU (up to 16), each pinned to its own
    // CPU without any privilege for it; a single unpinned one on a one-CPU machine.
    let cpus = std::thread::available_parallelism().unwrap().get().min(16);
    let mut responders: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| {
            let tid = t.ok()?.file_name().into_string().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
            let comm = comm.trim().to_string();
            let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
            let allowed = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
                .trim()
                .to_string();
            (comm.starts_with("arp") || comm.starts_with("ndp")).then_some((comm, allowed))
        })
        .collect();
    responders.sort();
    let mut expected: Vec<(String, String)> = Vec::new();
    let all = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Cpus_allowed_list:")
                .map(|v| v.trim().to_string())
        })
        .unwrap();
    for what in ["arp", "ndp"] {
        for i in 0..cpus {
            let pin = if cpus == 1 {
                all.clone()
            } else {
                i.to_string()
            };
            expected.push((format!("{what}{i}-eth0"), pin));
        }
    }
    expected.sort();
    assert_eq!(responders, expected);

    // Probes and metrics over the bridge.
    assert!(speaker.ready());
    let metrics = speaker.metrics().unwrap();
    assert!(metrics.contains("# TYPE"), "{metrics}");

    // SIGTERM ends it; the credential copies go with the handle.
    speaker
        .terminate(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", speaker.log_tail()));
    assert!(gone(pid));
    drop(speaker);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("credentials"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_speaker_is_reported_with_its_log_and_the_lab_leaves_none_behind() {
    let cp = control_plane::shared_with_crds();
    let (dir, kubeconfig, key) = identity("crash");
    let lab = Lab::create(2).unwrap();
    lab.register_nodes(&cp.client().await.unwrap())
        .await
        .unwrap();
    let mut speakers: Vec<Speaker> = lab
        .nodes()
        .iter()
        .map(|node| {
            let log = dir.join(format!("speaker-{}.log", node.name));
            Speaker::start(&SpeakerOptions::new(node, &kubeconfig, &key, log)).unwrap()
        })
        .collect();
    for s in &mut speakers {
        s.wait_ready(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    // A crash from outside: check_running says so, with the log's tail.
    let pid = speakers[0].pid();
    ferrolb_tests::process::run(
        std::process::Command::new("kill").args(["-KILL", &pid.to_string()]),
    )
    .unwrap();
    let err = ferrolb_tests::process::wait_for("the crash to show", Duration::from_secs(5), || {
        Ok(speakers[0].check_running().err())
    })
    .unwrap();
    assert!(format!("{err:#}").contains("exited early"), "{err:#}");
    speakers[1].check_running().unwrap();

    // Tearing the lab down stops the speaker still running in it.
    let survivor = speakers[1].pid();
    drop(lab);
    assert!(gone(survivor));
}
