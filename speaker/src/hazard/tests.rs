use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const VIP: &str = "198.51.100.200";
const VIP6: &str = "2001:db8:1::200";

fn addr(interface: &str, ip_: &str, prefix_len: u8, scope: u8) -> Address {
    Address {
        interface: interface.into(),
        ip: ip(ip_),
        prefix_len,
        scope,
        flags: 0x80, // IFA_F_PERMANENT
    }
}

/// A node with eth0 198.51.100.11/24 and lo 127.0.0.1/8, plus `extra`.
fn node(extra: &[Address]) -> KernelState {
    let mut addresses = vec![
        addr("lo", "127.0.0.1", 8, SCOPE_HOST),
        addr("eth0", "198.51.100.11", 24, 0),
        addr("eth0", "2001:db8:1::11", 64, 0),
    ];
    addresses.extend_from_slice(extra);
    KernelState {
        addresses,
        ..Default::default()
    }
}

fn announce(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

fn set_arp_ignore(state: &mut KernelState, interface: &str, value: u32) {
    if interface == "all" {
        state.ipv4_all.arp_ignore = value;
    } else {
        state.ipv4.entry(interface.into()).or_default().arp_ignore = value;
    }
}

/// (address, interface) of every hazard.
fn where_(hazards: &[Hazard]) -> Vec<(String, String)> {
    hazards
        .iter()
        .map(|h| (h.ip.to_string(), h.interface.clone()))
        .collect()
}

#[test]
fn nothing_configured_nothing_answered() {
    let s = node(&[]);
    assert!(kernel_answers(&s, &announce(&["eth0"]), &ips(&[VIP, VIP6])).is_empty());
}

#[test]
fn the_default_answers_for_a_vip_on_lo_on_every_announce_interface() {
    let s = node(&[addr("lo", VIP, 32, 0)]);
    let h = kernel_answers(&s, &announce(&["eth1", "eth0"]), &ips(&[VIP]));
    assert_eq!(
        where_(&h),
        vec![(VIP.into(), "eth0".into()), (VIP.into(), "eth1".into())]
    );
    assert_eq!(
        h[0].cause,
        Cause::Arp {
            configured_on: vec![("lo".into(), 32)],
            arp_ignore_all: 0,
            arp_ignore_interface: 0,
            arp_filter: false,
        }
    );
    assert_eq!(h[0].family(), "ipv4");
}

#[test]
fn kube_ipvs0_is_the_usual_holder() {
    let s = node(&[addr("kube-ipvs0", VIP, 32, 0)]);
    let h = kernel_answers(&s, &announce(&["eth0"]), &ips(&[VIP]));
    assert_eq!(where_(&h), vec![(VIP.into(), "eth0".into())]);
    let msg = h[0].message("node2");
    assert!(msg.contains("configured on kube-ipvs0 of node2"), "{msg}");
    assert!(msg.contains("strictARP: true"), "{msg}");
}

#[test]
fn only_handled_addresses_and_announce_interfaces_count() {
    // The node's own address (and a VIP of no handled Service) is local too, and answered:
    // not our business; only the addresses asked about are reported.
    let s = node(&[addr("lo", VIP, 32, 0)]);
    assert!(kernel_answers(&s, &announce(&["eth0"]), &ips(&["198.51.100.201"])).is_empty());
    // An interface the speaker does not announce on is not looked at.
    assert!(kernel_answers(&s, &announce(&[]), &ips(&[VIP])).is_empty());
    assert!(kernel_answers(&s, &announce(&["eth1"]), &ips(&["198.51.100.201"])).is_empty());
}

#[test]
fn strict_arp_silences_addresses_of_other_interfaces() {
    for mode in [1, 2] {
        let mut s = node(&[addr("lo", VIP, 32, 0), addr("kube-ipvs0", VIP, 32, 0)]);
        set_arp_ignore(&mut s, "all", mode);
        assert!(
            kernel_answers(&s, &announce(&["eth0"]), &ips(&[VIP])).is_empty(),
            "arp_ignore={mode}"
        );
    }
}

#[test]
fn the_larger_of_all_and_the_interface_counts() {
    let mut s = node(&[addr("lo", VIP, 32, 0)]);
    set_arp_ignore(&mut s, "eth0", 1);
    // eth0 is covered by its own value, eth1 is not.
    let h = kernel_answers(&s, &announce(&["eth0", "eth1"]), &ips(&[VIP]));
    assert_eq!(where_(&h), vec![(VIP.into(), "eth1".into())]);
    // all=1 with an interface at 0 still gives 1.
    let mut s = node(&[addr("lo", VIP, 32, 0)]);
    set_arp_ignore(&mut s, "all", 1);
    set_arp_ignore(&mut s, "eth0", 0);
    assert!(kernel_answers(&s, &announce(&["eth0"]), &ips(&[VIP])).is_empty());
}

#[test]
fn an_address_on_the_receiving_interface_is_answered_up_to_mode_3() {
    for mode in [0, 1, 2, 3, 4, 7, 9] {
        let mut s = node(&[addr("eth0", VIP, 32, 0)]);
        set_arp_ignore(&mut s, "all", mode);
        let h = kernel_answers(&s, &announce(&["eth0", "eth1"]), &ips(&[VIP]));
        let want: Vec<(String, String)> = match mode {
            // The address is on eth0 only: with 1 or 2, eth1 does not answer for it.
            1 | 2 => vec![(VIP.into(), "eth0".into())],
            _ => vec![(VIP.into(), "eth0".into()), (VIP.into(), "eth1".into())],
        };
        assert_eq!(where_(&h), want, "arp_ignore={mode}");
        let fix = h[0].fix("node1");
        assert!(
            fix.contains("ip addr del 198.51.100.200/32 dev eth0"),
            "{fix}"
        );
        assert!(!fix.contains("arp_ignore=1 net"), "{fix}");
    }
}

#[test]
fn mode_8_never_answers() {
    let mut s = node(&[addr("eth0", VIP, 32, 0), addr("lo", VIP, 32, 0)]);
    set_arp_ignore(&mut s, "eth0", 8);
    assert!(kernel_answers(&s, &announce(&["eth0"]), &ips(&[VIP])).is_empty());
}

#[test]
fn reserved_and_out_of_range_values_answer_like_0() {
    for mode in [4, 5, 6, 7, 9, 100] {
        let mut s = node(&[addr("lo", VIP, 32, 0)]);
        set_arp_ignore(&mut s, "all", mode);
        assert_eq!(
            kernel_answers(&s, &announce(&["eth0"]), &ips(&[VIP])).len(),
            1,
            "arp_ignore={mode}"
        );
    }
}

#[test]
fn mode_3_skips_host_scope_unless_route_localnet() {
    let answered = |scope: u8, localnet_all: bool, localnet_lo: bool| {
        let mut s = node(&[addr("lo", VIP, 32, scope)]);
        set_arp_ignore(&mut s, "all", 3);
        s.ipv4_all.route_localnet = localnet_all;
        s.ipv4.entry("lo".into()).or_default().route_localnet = localnet_lo;
        !kernel_answers(&s, &announce(&["eth0"]), &ips(&[VIP])).is_empty()
    };
    assert!(answered(0, false, false), "scope global");
    assert!(answered(200, false, false), "scope site");
    assert!(answered(SCOPE_LINK, false, false), "scope link");
    assert!(!answered(SCOPE_HOST, false, false), "scope host");
    assert!(
        answered(SCOPE_HOST, true, false),
        "scope host, all.route_localnet"
    );
    assert!(
        answered(SCOPE_HOST, false, true),
        "scope host, lo.route_localnet"
    );
    // route_localnet of another interface does not count.
    let mut s = node(&[addr("lo", VIP, 32, SCOPE_HOST)]);
    set_arp_ignore(&mut s, "all", 3);
    s.ipv4.entry("eth0".into()).or_default().route_localnet = true;
    assert!(kernel_answers(&s, &announce(&["eth0"]), &ips(&[VIP])).is_empty());
}

#[test]
fn arp_filter_is_reported_not_taken_as_a_remedy() {
    let mut s = node(&[addr("lo", VIP, 32, 0)]);
    s.ipv4.entry("eth0".into()).or_default().arp_filter = true;
    let h = kernel_answers(&s, &announce(&["eth0"]), &ips(&[VIP]));
    assert_eq!(h.len(), 1);
    assert!(matches!(
        h[0].cause,
        Cause::Arp {
            arp_filter: true,
            ..
        }
    ));
    assert!(h[0].describe("node1").contains("arp_filter is on"));
}

#[test]
fn only_the_holders_that_make_it_answer_are_named() {
    // arp_ignore=3: the host-scoped copy on lo is not answered for, the one on kube-ipvs0 is.
    let mut s = node(&[
        addr("lo", VIP, 32, SCOPE_HOST),
        addr("kube-ipvs0", VIP, 32, 0),
    ]);
    set_arp_ignore(&mut s, "all", 3);
    let h = kernel_answers(&s, &announce(&["eth0"]), &ips(&[VIP]));
    assert!(matches!(
        &h[0].cause,
        Cause::Arp { configured_on, .. } if configured_on == &vec![("kube-ipvs0".to_string(), 32)]
    ));
}

#[test]
fn fixes_name_the_exact_commands() {
    let s = node(&[addr("lo", VIP, 32, 0)]);
    let h = &kernel_answers(&s, &announce(&["eth0"]), &ips(&[VIP]))[0];
    let msg = h.message("node3");
    assert_eq!(
        msg,
        "node3's kernel answers ARP for 198.51.100.200 on eth0 itself: the address is configured \
         on lo of node3 and net.ipv4.conf.all.arp_ignore=0, net.ipv4.conf.eth0.arp_ignore=0 (the \
         kernel uses the larger, 0: answer for addresses of any interface); clients on the LAN \
         may get node3's MAC for it instead of the announcing node's. Fix: run `sysctl -w \
         net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2` on node3 (and persist \
         it in /etc/sysctl.d); if kube-proxy runs in IPVS mode (it puts every LoadBalancer IP on \
         kube-ipvs0), set `strictARP: true` in its KubeProxyConfiguration (or \
         --ipvs-strict-arp), which sets the same."
    );
    // An interface value that would still answer after all=1 is named too.
    let mut s = node(&[addr("lo", VIP, 32, 0)]);
    set_arp_ignore(&mut s, "eth0", 5);
    let fix = kernel_answers(&s, &announce(&["eth0"]), &ips(&[VIP]))[0].fix("n");
    assert!(
        fix.contains(&format!(
            "{ARP_SYSCTL_FIX} net.ipv4.conf.eth0.arp_ignore=1`"
        )),
        "{fix}"
    );
    // On both lo and eth0 under mode 0: both remedies.
    let s = node(&[addr("lo", VIP, 32, 0), addr("eth0", VIP, 24, 0)]);
    let fix = kernel_answers(&s, &announce(&["eth0"]), &ips(&[VIP]))[0].fix("n");
    assert!(fix.contains(ARP_SYSCTL_FIX) && fix.contains("ip addr del 198.51.100.200/24 dev eth0"));
}

#[test]
fn ipv6_is_answered_only_on_the_interface_holding_it() {
    for holder in ["lo", "kube-ipvs0", "eth1"] {
        let s = node(&[addr(holder, VIP6, 128, 0)]);
        assert!(
            kernel_answers(&s, &announce(&["eth0"]), &ips(&[VIP6])).is_empty(),
            "{holder}"
        );
    }
    let s = node(&[addr("eth0", VIP6, 128, 0)]);
    let h = kernel_answers(&s, &announce(&["eth0", "eth1"]), &ips(&[VIP6]));
    assert_eq!(where_(&h), vec![(VIP6.into(), "eth0".into())]);
    assert_eq!(h[0].cause, Cause::Ndp { prefix_len: 128 });
    assert_eq!(h[0].family(), "ipv6");
    assert!(
        h[0].fix("n")
            .contains("ip -6 addr del 2001:db8:1::200/128 dev eth0")
    );
    // arp_ignore plays no part in IPv6.
    let mut s = node(&[addr("eth0", VIP6, 128, 0)]);
    set_arp_ignore(&mut s, "all", 8);
    assert_eq!(
        kernel_answers(&s, &announce(&["eth0"]), &ips(&[VIP6])).len(),
        1
    );
}

#[test]
fn ipv6_tentative_and_failed_addresses_are_not_answered() {
    let with_flags = |flags: u32| {
        let mut a = addr("eth0", VIP6, 128, 0);
        a.flags = flags;
        !kernel_answers(&node(&[a]), &announce(&["eth0"]), &ips(&[VIP6])).is_empty()
    };
    assert!(with_flags(0));
    assert!(!with_flags(IFA_F_TENTATIVE));
    assert!(with_flags(IFA_F_TENTATIVE | IFA_F_OPTIMISTIC));
    // Failed DAD leaves the address tentative and failed: never answered.
    assert!(!with_flags(IFA_F_TENTATIVE | IFA_F_DADFAILED));
    assert!(!with_flags(
        IFA_F_TENTATIVE | IFA_F_DADFAILED | IFA_F_OPTIMISTIC
    ));
}

#[test]
fn ipv6_proxy_entries_need_proxy_ndp_and_forwarding() {
    let proxied = |entry: Option<&str>, all_proxy: bool, proxy: bool, forwarding: bool| {
        let mut s = node(&[]);
        s.proxies.push(ProxyEntry {
            interface: entry.map(str::to_string),
            ip: VIP6.parse().unwrap(),
        });
        s.ipv6_all.proxy_ndp = all_proxy;
        s.ipv6.insert(
            "eth0".into(),
            Ipv6Conf {
                proxy_ndp: proxy,
                forwarding,
            },
        );
        kernel_answers(&s, &announce(&["eth0"]), &ips(&[VIP6]))
    };
    let h = proxied(Some("eth0"), false, true, true);
    assert_eq!(
        h[0].cause,
        Cause::ProxyNdp {
            entry_interface: Some("eth0".into())
        }
    );
    assert!(
        h[0].fix("n")
            .contains("ip -6 neigh del proxy 2001:db8:1::200 dev eth0")
    );
    assert_eq!(proxied(Some("eth0"), true, false, true).len(), 1);
    assert_eq!(proxied(None, false, true, true).len(), 1);
    assert!(proxied(Some("eth0"), false, true, false).is_empty());
    assert!(proxied(Some("eth0"), false, false, true).is_empty());
    assert!(proxied(Some("eth1"), true, true, true).is_empty());
}

#[test]
fn results_are_sorted_and_per_family() {
    let s = node(&[
        addr("lo", "198.51.100.201", 32, 0),
        addr("lo", VIP, 32, 0),
        addr("eth0", VIP6, 128, 0),
    ]);
    let h = kernel_answers(
        &s,
        &announce(&["eth1", "eth0"]),
        &ips(&[VIP6, "198.51.100.201", VIP]),
    );
    assert_eq!(
        where_(&h),
        vec![
            (VIP.into(), "eth0".into()),
            (VIP.into(), "eth1".into()),
            ("198.51.100.201".into(), "eth0".into()),
            ("198.51.100.201".into(), "eth1".into()),
            (VIP6.into(), "eth0".into()),
        ]
    );
}

/// The kernel's decision, transcribed from `arp_ignore()` and `confirm_addr_indev()` with the
/// sender address 0 (an ARP probe, which mode 2 answers like mode 1): the oracle for the sweep.
fn kernel_replies(state: &KernelState, incoming: &str, vip: IpAddr) -> bool {
    const RT_SCOPE_HOST: u8 = 254;
    const RT_SCOPE_LINK: u8 = 253;
    // arp_process: only for RTN_LOCAL targets, i.e. configured somewhere.
    let holders: Vec<&Address> = state.addresses.iter().filter(|a| a.ip == vip).collect();
    if holders.is_empty() {
        return false;
    }
    let conf = |dev: &str| state.ipv4.get(dev).copied().unwrap_or_default();
    let (in_dev, scope) = match state.ipv4_all.arp_ignore.max(conf(incoming).arp_ignore) {
        0 => return true,
        1 | 2 => (Some(incoming), RT_SCOPE_HOST),
        3 => (None, RT_SCOPE_LINK),
        4..=7 => return true,
        8 => return false,
        _ => return true,
    };
    let confirm_addr_indev = |dev: &str| {
        let localnet_scope = if state.ipv4_all.route_localnet || conf(dev).route_localnet {
            RT_SCOPE_LINK
        } else {
            RT_SCOPE_HOST
        };
        holders
            .iter()
            .filter(|a| a.interface == dev)
            .any(|a| a.scope.min(localnet_scope) <= scope)
    };
    match in_dev {
        Some(dev) => confirm_addr_indev(dev),
        None => holders.iter().any(|a| confirm_addr_indev(&a.interface)),
    }
}

#[test]
fn every_arp_ignore_placement_and_scope_agrees_with_the_kernel() {
    let places = ["lo", "eth0", "eth1"];
    let mut checked = 0;
    for all in 0..=9u32 {
        for own in 0..=9u32 {
            for placement in 0..(1u8 << places.len()) {
                for scope in [0u8, SCOPE_LINK, SCOPE_HOST] {
                    for localnet in 0..4u8 {
                        let extra: Vec<Address> = places
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| placement & (1 << i) != 0)
                            .map(|(_, p)| addr(p, VIP, 32, scope))
                            .collect();
                        let mut s = node(&extra);
                        s.ipv4_all.arp_ignore = all;
                        s.ipv4_all.route_localnet = localnet & 1 != 0;
                        s.ipv4.insert(
                            "eth0".into(),
                            Ipv4Conf {
                                arp_ignore: own,
                                ..Default::default()
                            },
                        );
                        s.ipv4.insert(
                            "lo".into(),
                            Ipv4Conf {
                                route_localnet: localnet & 2 != 0,
                                ..Default::default()
                            },
                        );
                        let got = kernel_answers(&s, &announce(&["eth0", "eth1"]), &ips(&[VIP]));
                        for incoming in ["eth0", "eth1"] {
                            let want = kernel_replies(&s, incoming, ip(VIP));
                            let have = got.iter().any(|h| h.interface == incoming);
                            assert_eq!(
                                have, want,
                                "all={all} eth0={own} on {placement:03b} scope {scope} \
                                 localnet {localnet:02b}, request on {incoming}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, 10 * 10 * 8 * 3 * 4 * 2);
}
