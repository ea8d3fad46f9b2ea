//! Why the speaker cannot open its raw packet sockets, and what to change (pure, plus one read
//! of `/proc/self/status`).
//!
//! Answering ARP and NDP needs `AF_PACKET` sockets, which need `CAP_NET_RAW`. The chart runs the
//! speaker as uid 0 with every capability dropped but `NET_RAW`. When opening fails with
//! `EPERM`, the process's own capability sets tell which of the usual causes it is:
//!
//! | bounding set has NET_RAW | effective has it | uid | cause |
//! |---|---|---|---|
//! | no | - | - | the Pod's `securityContext` or a policy rewriting it dropped NET_RAW |
//! | yes | no | not 0 | a non-root container never holds added capabilities (they are not ambient) |
//! | yes | no | 0 | dropped from the process after start (a wrapper, `setpriv`, `capsh`) |
//! | yes | yes | - | an LSM or seccomp profile denies packet sockets |

/// Capability number of `CAP_NET_RAW`.
pub const CAP_NET_RAW: u32 = 13;

/// What `/proc/self/status` says about the process's identity and capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Privileges {
    /// Effective uid.
    pub uid: u32,
    /// `CapEff`.
    pub effective: u64,
    /// `CapBnd`.
    pub bounding: u64,
}

impl Privileges {
    /// This process's, or `None` when `/proc/self/status` cannot be read or parsed.
    pub fn current() -> Option<Privileges> {
        parse_status(&std::fs::read_to_string("/proc/self/status").ok()?)
    }

    /// Whether `cap` is in the effective set.
    pub fn has_effective(&self, cap: u32) -> bool {
        self.effective & (1 << cap) != 0
    }

    /// Whether `cap` is in the bounding set.
    pub fn has_bounding(&self, cap: u32) -> bool {
        self.bounding & (1 << cap) != 0
    }
}

/// Parses the `Uid:`, `CapEff:` and `CapBnd:` lines of a `/proc/<pid>/status`.
pub fn parse_status(text: &str) -> Option<Privileges> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    // Uid: real, effective, saved, filesystem.
    let uid = field("Uid:")?.split_whitespace().nth(1)?.parse().ok()?;
    let hex = |name: &str| u64::from_str_radix(field(name)?, 16).ok();
    Some(Privileges {
        uid,
        effective: hex("CapEff:")?,
        bounding: hex("CapBnd:")?,
    })
}

/// Why `AF_PACKET` sockets are refused and what to change, given the process's privileges
/// (`None`: unknown).
pub fn why_no_packet_sockets(p: Option<Privileges>) -> String {
    const ALLOW: &str = "the chart's DaemonSet adds it (securityContext.capabilities: drop [ALL], \
                         add [NET_RAW]); if a PodSecurityPolicy, SecurityContextConstraints or \
                         mutating admission policy drops it, allow NET_RAW for the ferrolb \
                         speaker";
    let Some(p) = p else {
        return format!("the speaker needs the CAP_NET_RAW capability: {ALLOW}");
    };
    if !p.has_bounding(CAP_NET_RAW) {
        return format!(
            "the container does not have the CAP_NET_RAW capability at all (not in its bounding \
             set): {ALLOW}"
        );
    }
    if !p.has_effective(CAP_NET_RAW) && p.uid != 0 {
        return format!(
            "the speaker runs as uid {}, and a non-root container never holds a capability \
             Kubernetes adds (Kubernetes cannot make it ambient): run it as uid 0 as the chart \
             does (securityContext.runAsUser: 0; every other capability stays dropped)",
            p.uid
        );
    }
    if !p.has_effective(CAP_NET_RAW) {
        return "CAP_NET_RAW is allowed for the container but not effective in the speaker \
                process: something between the runtime and the speaker (a wrapper such as \
                setpriv or capsh) dropped it; start the speaker directly"
            .to_string();
    }
    "the speaker holds CAP_NET_RAW, so a security module or seccomp profile (AppArmor, SELinux, \
     a custom seccomp profile) denies packet sockets: allow AF_PACKET sockets for the speaker"
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(uid: u32, eff: u64, bnd: u64) -> String {
        format!(
            "Name:\tferrolb-speaker\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t0\t0\t0\t0\n\
             CapInh:\t0000000000000000\nCapPrm:\t{eff:016x}\nCapEff:\t{eff:016x}\n\
             CapBnd:\t{bnd:016x}\nCapAmb:\t0000000000000000\n"
        )
    }

    const NET_RAW: u64 = 1 << 13;

    #[test]
    fn parses_proc_status() {
        let p = parse_status(&status(65534, 0, NET_RAW)).unwrap();
        assert_eq!(
            p,
            Privileges {
                uid: 65534,
                effective: 0,
                bounding: NET_RAW
            }
        );
        assert!(p.has_bounding(CAP_NET_RAW) && !p.has_effective(CAP_NET_RAW));
        assert_eq!(parse_status("Name:\tx\n"), None);
        assert_eq!(parse_status("Uid:\tnope\nCapEff:\t0\nCapBnd:\t0\n"), None);
        // This very process: readable wherever /proc is mounted.
        assert!(Privileges::current().is_some());
    }

    #[test]
    fn each_cause_gets_its_own_remedy() {
        let why = |uid, eff, bnd| why_no_packet_sockets(parse_status(&status(uid, eff, bnd)));
        let dropped = why(65534, 0, 0);
        assert!(dropped.contains("not in its bounding set"), "{dropped}");
        assert!(dropped.contains("add [NET_RAW]"), "{dropped}");
        assert!(dropped.contains("PodSecurity"), "{dropped}");
        let non_root = why(65534, 0, NET_RAW);
        assert!(non_root.contains("runs as uid 65534"), "{non_root}");
        assert!(non_root.contains("runAsUser: 0"), "{non_root}");
        let root = why(0, 0, NET_RAW);
        assert!(root.contains("not effective"), "{root}");
        let lsm = why(0, NET_RAW, NET_RAW);
        assert!(lsm.contains("seccomp"), "{lsm}");
        assert!(why_no_packet_sockets(None).contains("CAP_NET_RAW"));
    }
}
