//! The node's interfaces, read from sysfs, and which of them the speaker answers on.
//!
//! Suitable: up, ARP-capable Ethernet-like, not loopback, not a member of a bond or bridge (the
//! master answers instead), and not excluded by name. Pod and overlay interfaces are excluded by
//! default ([`DEFAULT_EXCLUDES`]). An `L2Advertisement`'s `interfaces` narrow this further.

use std::io;
use std::path::Path;

use crate::wire::Mac;

/// Interface name patterns never answered on unless `--exclude-interfaces` says otherwise.
pub const DEFAULT_EXCLUDES: &str = "veth*,cali*,flannel*,cni*,docker*,kube-ipvs*,kube-bridge*,cilium*,lxc*,vxlan*,genev*,tunl*,weave*,nodelocaldns*,virbr*";

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;
const IFF_NOARP: u32 = 0x80;
/// `ARPHRD_ETHER`: Ethernet and everything that frames like it (veth, bridge, bond, VLAN).
const ARPHRD_ETHER: u32 = 1;

/// One interface as sysfs describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Kernel interface index.
    pub index: u32,
    /// Name (`eth0`).
    pub name: String,
    /// Hardware address.
    pub mac: Mac,
    /// `IFF_*` flags.
    pub flags: u32,
    /// `ARPHRD_*` type.
    pub link_type: u32,
    /// Enslaved to a bond, bridge or team.
    pub has_master: bool,
}

/// Why an interface is not answered on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unsuitable {
    /// Administratively down.
    Down,
    /// The loopback interface.
    Loopback,
    /// Flagged NOARP.
    NoArp,
    /// Not Ethernet-like.
    NotEthernet,
    /// A bond or bridge member.
    Enslaved,
    /// Matches this exclude pattern.
    Excluded(String),
}

/// Name patterns: `*` matches any run of characters (`veth*`, `*-ext`, `eth0`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Excludes(Vec<String>);

impl Excludes {
    /// Parses a comma-separated list; blanks are ignored.
    pub fn parse(list: &str) -> Excludes {
        Excludes(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    /// The first pattern matching `name`.
    pub fn matching(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|p| glob_match(p, name))
            .map(String::as_str)
    }
}

/// Shell-style match with `*` only.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

impl Link {
    /// Whether the speaker answers on this interface.
    pub fn suitability(&self, excludes: &Excludes) -> Result<(), Unsuitable> {
        if self.flags & IFF_LOOPBACK != 0 {
            return Err(Unsuitable::Loopback);
        }
        if self.flags & IFF_UP == 0 {
            return Err(Unsuitable::Down);
        }
        if self.flags & IFF_NOARP != 0 {
            return Err(Unsuitable::NoArp);
        }
        if self.link_type != ARPHRD_ETHER {
            return Err(Unsuitable::NotEthernet);
        }
        if self.has_master {
            return Err(Unsuitable::Enslaved);
        }
        if let Some(p) = excludes.matching(&self.name) {
            return Err(Unsuitable::Excluded(p.to_string()));
        }
        Ok(())
    }
}

/// Every interface of this network namespace (as seen through `/sys/class/net`).
pub fn list() -> io::Result<Vec<Link>> {
    list_in(Path::new("/sys/class/net"))
}

fn list_in(root: &Path) -> io::Result<Vec<Link>> {
    let mut links = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // An interface can vanish between read_dir and the reads: skip it, the netlink event
        // that follows triggers another listing.
        if let Ok(link) = read_link(&entry.path(), name) {
            links.push(link);
        }
    }
    links.sort_by_key(|l| l.index);
    Ok(links)
}

fn read_link(dir: &Path, name: String) -> io::Result<Link> {
    let read = |file: &str| -> io::Result<String> {
        Ok(std::fs::read_to_string(dir.join(file))?.trim().to_string())
    };
    let bad = |what: &str, value: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: unexpected {what} {value:?}", dir.display()),
        )
    };
    let index = read("ifindex")?;
    let flags = read("flags")?;
    let link_type = read("type")?;
    let address = read("address")?;
    Ok(Link {
        index: index.parse().map_err(|_| bad("ifindex", &index))?,
        mac: address.parse().unwrap_or(Mac::ZERO),
        flags: u32::from_str_radix(flags.trim_start_matches("0x"), 16)
            .map_err(|_| bad("flags", &flags))?,
        link_type: link_type.parse().map_err(|_| bad("type", &link_type))?,
        has_master: dir.join("master").exists(),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, flags: u32) -> Link {
        Link {
            index: 2,
            name: name.into(),
            mac: "02:fe:00:00:00:01".parse().unwrap(),
            flags,
            link_type: ARPHRD_ETHER,
            has_master: false,
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("veth*", "veth12ab"));
        assert!(glob_match("veth*", "veth"));
        assert!(!glob_match("veth*", "eth0"));
        assert!(glob_match("*-ext", "bond0-ext"));
        assert!(glob_match("cali*x*", "cali1x2"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(glob_match("eth0", "eth0") && !glob_match("eth0", "eth01"));
        assert!(glob_match("*", "anything"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn suitability_rules() {
        let ex = Excludes::parse(DEFAULT_EXCLUDES);
        assert_eq!(link("eth0", 0x1003).suitability(&ex), Ok(()));
        assert_eq!(link("eth0", 0x1002).suitability(&ex), Err(Unsuitable::Down));
        assert_eq!(link("lo", 0x9).suitability(&ex), Err(Unsuitable::Loopback));
        assert_eq!(
            link("eth1", 0x1083).suitability(&ex),
            Err(Unsuitable::NoArp)
        );
        assert_eq!(
            link("cali123", 0x1003).suitability(&ex),
            Err(Unsuitable::Excluded("cali*".into()))
        );
        let member = Link {
            has_master: true,
            ..link("eth2", 0x1003)
        };
        assert_eq!(member.suitability(&ex), Err(Unsuitable::Enslaved));
        let tun = Link {
            link_type: 65534,
            ..link("wg0", 0x1003)
        };
        assert_eq!(tun.suitability(&ex), Err(Unsuitable::NotEthernet));
        // An empty list excludes nothing.
        assert_eq!(
            link("veth0", 0x1003).suitability(&Excludes::parse(" , ")),
            Ok(())
        );
    }

    #[test]
    fn reads_sysfs_layout() {
        let dir = tempfile_dir();
        let eth0 = dir.join("eth0");
        std::fs::create_dir_all(&eth0).unwrap();
        for (f, v) in [
            ("ifindex", "7\n"),
            ("flags", "0x1003\n"),
            ("type", "1\n"),
            ("address", "02:fe:00:00:00:07\n"),
        ] {
            std::fs::write(eth0.join(f), v).unwrap();
        }
        std::fs::create_dir_all(dir.join("broken")).unwrap();
        let links = list_in(&dir).unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].index, 7);
        assert_eq!(links[0].mac.to_string(), "02:fe:00:00:00:07");
        assert!(!links[0].has_master);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ferrolb-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
