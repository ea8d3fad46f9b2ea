//! What real nodes leave on the machine outside their network namespaces, and its removal: a
//! cgroup root per node in every cgroup v1 hierarchy, mounts (container root filesystems, pod
//! volumes, sandbox network namespaces) under the nodes' state directories, and the kubelet's
//! `/var/log/containers` links.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Every node's persistent state lives under here (`<DATA_ROOT>/<node>`).
pub const DATA_ROOT: &str = "/var/lib/ferrolb-lab";
/// Every node's sockets and runtime state live under here (`<RUN_ROOT>/<node>`).
pub const RUN_ROOT: &str = "/run/ferrolb-lab";
/// Prefix of the per-node cgroup roots (`/ferrolb-lab-node1`, ...).
const CGROUP_PREFIX: &str = "ferrolb-lab-";

/// The cgroup root (in every v1 hierarchy) of `node`'s pods: `/ferrolb-lab-<node>`.
pub fn cgroup_root(node: &str) -> String {
    format!("/{CGROUP_PREFIX}{node}")
}

/// Mount points of the cgroup hierarchies (`/sys/fs/cgroup/cpu`, ..., and the hybrid layout's
/// cgroup2 at `/sys/fs/cgroup/unified`, where runc mirrors the v1 paths), from /proc/mounts.
fn cgroup_hierarchies() -> Result<Vec<PathBuf>> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    Ok(mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && (f[2] == "cgroup" || f[2] == "cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .collect())
}

/// Creates `root` in every v1 hierarchy; in cpuset, copies the parent's CPUs and memory nodes,
/// which a new cpuset starts without (and then admits no process).
pub fn create_cgroup_root(root: &str) -> Result<()> {
    let hierarchies = cgroup_hierarchies()?;
    if !std::fs::read_to_string("/proc/mounts")?
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("cgroup"))
    {
        bail!(
            "no cgroup v1 hierarchy is mounted: real lab nodes need the kubelet's cgroupfs driver \
             on cgroup v1 (this machine kind's layout; see shared/reference/real-nodes.md)"
        );
    }
    for h in hierarchies {
        let dir = h.join(root.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let parent = h.join(file);
            if parent.is_file() {
                let value = std::fs::read_to_string(&parent)?;
                std::fs::write(dir.join(file), value.trim())
                    .with_context(|| format!("writing {}", dir.join(file).display()))?;
            }
        }
    }
    Ok(())
}

/// Every cgroup directory under `root` in `hierarchy`, deepest first.
fn cgroup_tree(hierarchy: &Path, root: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
        }
        out.push(dir.to_path_buf());
    }
    let top = hierarchy.join(root.trim_start_matches('/'));
    let mut out = Vec::new();
    if top.is_dir() {
        walk(&top, &mut out);
    }
    out
}

/// SIGKILLs every process in `root`'s cgroups (all hierarchies) until none is left; fails after
/// 10 s.
pub fn kill_cgroup(root: &str) -> Result<()> {
    let hierarchies = cgroup_hierarchies()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut pids = Vec::new();
        for h in &hierarchies {
            for dir in cgroup_tree(h, root) {
                if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                    pids.extend(procs.split_whitespace().map(str::to_string));
                }
            }
        }
        pids.sort();
        pids.dedup();
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("processes {pids:?} in cgroup {root} survive SIGKILL");
        }
        let _ = Command::new("kill").arg("-KILL").args(&pids).output();
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes `root` and every cgroup below it in every hierarchy (they must be empty).
pub fn remove_cgroup(root: &str) -> Result<()> {
    for h in cgroup_hierarchies()? {
        for dir in cgroup_tree(&h, root) {
            // A cgroup whose last process just exited can be busy for a moment.
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Err(e) = std::fs::remove_dir(&dir) {
                if e.kind() == std::io::ErrorKind::NotFound {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(e).with_context(|| format!("removing cgroup {}", dir.display()));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(())
}

/// Mount points at or under `prefix`, deepest first, from /proc/self/mountinfo.
pub fn mounts_under(mountinfo: &str, prefix: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(unescape_mount_path)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let code = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(code as char);
            i += 4;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Lazily unmounts everything mounted at or under `prefix`.
pub fn unmount_under(prefix: &Path) -> Result<()> {
    // A lazy unmount of a parent can detach children too: repeat until nothing is left.
    for _ in 0..5 {
        let info = std::fs::read_to_string("/proc/self/mountinfo")?;
        let points = mounts_under(&info, prefix);
        if points.is_empty() {
            return Ok(());
        }
        for p in points {
            let _ = Command::new("umount").arg("--lazy").arg(&p).output();
        }
    }
    let left = mounts_under(&std::fs::read_to_string("/proc/self/mountinfo")?, prefix);
    if !left.is_empty() {
        bail!("could not unmount {left:?}");
    }
    Ok(())
}

/// Node names with a cgroup root on the machine (left by a crashed run, or running).
fn cgroup_nodes() -> Result<Vec<String>> {
    let mut nodes = Vec::new();
    for h in cgroup_hierarchies()? {
        if let Ok(entries) = std::fs::read_dir(&h) {
            for e in entries.flatten() {
                if let Some(node) = e
                    .file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix(CGROUP_PREFIX))
                {
                    nodes.push(node.to_string());
                }
            }
        }
    }
    nodes.sort();
    nodes.dedup();
    Ok(nodes)
}

/// Removes what real nodes left on the machine: kills the processes in their cgroups, removes
/// the cgroups, unmounts and deletes their state directories and the kubelet's log links.
/// Processes inside lab network namespaces are killed by [`crate::lab`] before this.
pub fn remove_leftovers() -> Result<()> {
    for node in cgroup_nodes()? {
        let root = cgroup_root(&node);
        kill_cgroup(&root)?;
        remove_cgroup(&root)?;
    }
    for dir in [RUN_ROOT, DATA_ROOT] {
        let dir = Path::new(dir);
        unmount_under(dir)?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    remove_container_log_links()?;
    remove_cni_cache()
}

/// The CNI library caches each attachment's result machine-wide (`/var/lib/cni/results`), named
/// after the network; host-local leases of runs before their data moved under each node's state
/// lived in `/var/lib/cni/networks/<network>`.
fn remove_cni_cache() -> Result<()> {
    let network = super::config::CNI_NETWORK;
    let leases = Path::new("/var/lib/cni/networks").join(network);
    if leases.exists() {
        std::fs::remove_dir_all(&leases)
            .with_context(|| format!("removing {}", leases.display()))?;
    }
    let Ok(entries) = std::fs::read_dir("/var/lib/cni/results") else {
        return Ok(());
    };
    for e in entries.flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&format!("{network}-")))
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// The kubelet links every container's log into /var/log/containers, whatever its pod log dir;
/// removes the links that point into a lab node's state.
fn remove_container_log_links() -> Result<()> {
    let Ok(entries) = std::fs::read_dir("/var/log/containers") else {
        return Ok(());
    };
    for e in entries.flatten() {
        if std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(DATA_ROOT)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_under_a_prefix_come_deepest_first() {
        let info = "\
22 1 254:0 / / rw - ext4 /dev/vda rw
90 22 0:50 / /run/ferrolb-lab/node1/containerd/sandboxes/abc/shm rw - tmpfs shm rw
91 22 0:51 / /var/lib/ferrolb-lab/node1/kubelet/pods/x/volumes/kube-api-access rw - tmpfs tmpfs rw
92 22 0:52 / /var/lib/ferrolb-lab/node1/containerd/x/rootfs rw - overlay overlay rw
93 22 0:53 / /var/lib/ferrolb-lab/node1 rw - ext4 /dev/vda rw
94 22 0:54 / /var/lib/ferrolb-labx rw - ext4 /dev/vda rw
95 22 0:55 / /var/lib/ferrolb-lab/with\\040space rw - ext4 /dev/vda rw
";
        let got = mounts_under(info, Path::new(DATA_ROOT));
        assert_eq!(
            got,
            vec![
                PathBuf::from("/var/lib/ferrolb-lab/node1/kubelet/pods/x/volumes/kube-api-access"),
                PathBuf::from("/var/lib/ferrolb-lab/node1/containerd/x/rootfs"),
                PathBuf::from("/var/lib/ferrolb-lab/node1"),
                PathBuf::from("/var/lib/ferrolb-lab/with space"),
            ]
        );
    }

    #[test]
    fn cgroup_roots_are_named_per_node() {
        assert_eq!(cgroup_root("node3"), "/ferrolb-lab-node3");
    }
}
