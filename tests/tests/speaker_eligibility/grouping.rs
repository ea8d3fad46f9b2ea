//! Addresses announced as a group by one node: both families of a dual-stack Service, and an IP
//! shared by several Services.

use anyhow::Result;
use ferrolb_crds::contract::annotation::ALLOW_SHARED_IP;
use ferrolb_tests::l2lab::{Rig, TIMEOUT};
use serde_json::{Value, json};

use crate::wire::{expect_owner, expect_replies_from};
use crate::{ip, wait_announced_by};

// ---- dual-stack ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_addresses_are_announced_by_one_node() -> Result<()> {
    let rig = Rig::start("dual", 3, &[], false).await?;
    rig.pool_and_advertisement(
        "dual",
        &[
            "198.51.100.200-198.51.100.210",
            "2001:db8:1::200-2001:db8:1::20f",
        ],
        json!({}),
    )
    .await?;
    rig.scenario
        .service(
            "web",
            json!({"spec": {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}}),
        )
        .await?;
    let ips = rig
        .scenario
        .wait("web", "an IPv4 and an IPv6 ingress address", |s| {
            let ips = ferrolb_tests::scenario::ingress(s);
            (ips.len() == 2).then_some(ips)
        })
        .await?;
    let (v4, v6) = (ip(&ips[0]), ip(&ips[1]));
    assert!(v4.is_ipv4() && v6.is_ipv6(), "{ips:?}");

    let owner = rig.wait_announcer("web", None).await?;
    let c = expect_owner(&rig, "web", v4, &owner).await?;
    assert_eq!(c.message, format!("{owner} announces {v4}, {v6} on eth0"));
    let mac = rig.host(&owner)?.mac.clone();

    let answer = rig.curl_until(v6, TIMEOUT, |a| !a.is_empty())?;
    assert_eq!(
        answer, owner,
        "curl over IPv6 reached another node than over IPv4"
    );
    assert_eq!(rig.client_neighbour(v6)?, Some(mac.clone()));
    // ndisc6 prints every advertisement for the target while it listens, solicited or not
    // (a takeover's gratuitous burst or the periodic refresh may fall into its window), so
    // "once" is checked on the wire: exactly one solicited advertisement answers the one
    // solicitation, and nothing else advertises the address meanwhile.
    let capture = rig.capture("icmp6")?;
    let advertised = rig.ndisc6(v6)?;
    let adverts = capture.finish(
        &format!("icmpv6.type == 136 && icmpv6.nd.na.target_address == {v6}"),
        &["eth.src", "icmpv6.nd.na.flag.s", "ipv6.dst"],
    )?;
    assert!(
        !advertised.is_empty() && advertised.iter().all(|m| *m == mac),
        "ndisc6 {v6}: advertisements only from {owner}: {advertised:?}"
    );
    // (source MAC, destination) of each solicited advertisement; ndisc6 solicits from the
    // client's link-local address, so the answer goes there.
    let solicited: Vec<(&str, &str)> = adverts
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            matches!(f.get(1), Some(&("1" | "True")))
                .then(|| (f[0], f.get(2).copied().unwrap_or("")))
        })
        .collect();
    assert!(
        solicited.len() == 1 && solicited[0].0 == mac && !solicited[0].1.starts_with("ff"),
        "exactly one solicited advertisement, from {owner} to the client; all (source, \
         solicited, destination): {adverts:?}"
    );
    assert!(
        adverts.iter().all(|l| l.starts_with(&mac)),
        "advertisements of {v6} from another node: {adverts:?}"
    );
    Ok(())
}

// ---- shared IPs ------------------------------------------------------------------------------

fn shared(key: &str, port: i32) -> Value {
    json!({
        "metadata": {"annotations": {ALLOW_SHARED_IP: key}},
        "spec": {"ports": [{"port": port, "name": "p"}], "selector": {"app": "shared"}},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_sharing_an_ip_have_one_announcer() -> Result<()> {
    let rig = Rig::start("shared", 3, &[], false).await?;
    rig.pool_and_advertisement("shared", &["198.51.100.200-198.51.100.210"], json!({}))
        .await?;
    rig.scenario.service("http", shared("web", 80)).await?;
    let ips = rig.scenario.wait_any_ip("http").await?;
    rig.scenario.service("alt", shared("web", 8080)).await?;
    rig.scenario.wait_ips("alt", &[ips[0].as_str()]).await?;
    let vip = ip(&ips[0]);

    let owner = rig.wait_announcer("http", None).await?;
    let c = expect_owner(&rig, "http", vip, &owner).await?;
    let alt = wait_announced_by(&rig, "alt", &owner).await?;
    assert_eq!(
        alt.message, c.message,
        "both Services name the same announcer"
    );
    assert_eq!(c.message, format!("{owner} announces {vip} on eth0"));

    // Port 8080 of the VIP lands on the same node (its backend listens there too).
    let alt_answer = rig.client(
        "curl",
        &["-sS", "--max-time", "2", &format!("http://{vip}:8080/")],
    )?;
    assert_eq!(alt_answer.trim(), owner);
    expect_replies_from(&rig, vip, &owner, 5)?;
    Ok(())
}
