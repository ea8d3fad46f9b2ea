use super::*;

fn look(ms: u64, ip: &str, answers: &[&str], http: bool) -> Look {
    Look {
        at: Duration::from_millis(ms),
        ip: ip.parse().unwrap(),
        port: 80,
        answers: Some(answers.iter().map(|s| s.to_string()).collect()),
        http: if http {
            Ok("pod p on n".into())
        } else {
            Err("timed out".into())
        },
    }
}

const A: &str = "02:fe:00:00:00:01";
const B: &str = "02:fe:00:00:00:02";
const IP: &str = "198.51.100.200";

#[test]
fn a_handover_with_a_gap_is_one_silence_and_two_owners() {
    let looks = [
        look(0, IP, &[A], true),
        look(1000, IP, &[], true),
        look(2000, IP, &[], false),
        look(3500, IP, &[B], true),
        look(4000, IP, &[B], true),
    ];
    let s = summarize(&looks);
    assert_eq!(s.looks, 5);
    assert!(s.double_answers.is_empty());
    let ip: IpAddr = IP.parse().unwrap();
    assert_eq!(s.longest_silence[&ip], Duration::from_millis(2500));
    assert_eq!(s.owners[&ip], vec![A.to_string(), B.to_string()]);
    assert_eq!(
        s.http_failures,
        vec!["2.000 s: http://198.51.100.200:80/: timed out".to_string()]
    );
}

#[test]
fn answers_from_two_nodes_are_reported_and_one_node_twice_is_counted() {
    let s = summarize(&[look(0, IP, &[A, B], true), look(10, IP, &[A, A], true)]);
    assert_eq!(s.double_answers.len(), 1, "{:?}", s.double_answers);
    assert!(s.double_answers[0].contains(A) && s.double_answers[0].contains(B));
    assert_eq!(s.repeated_replies, 1);
}

#[test]
fn ipv6_looks_count_only_for_http() {
    let v6 = Look {
        answers: None,
        ..look(0, "2001:db8:1::200", &[], false)
    };
    let s = summarize(&[v6]);
    assert!(s.longest_silence.is_empty() && s.owners.is_empty());
    assert_eq!(s.http_failures.len(), 1);
    assert!(s.http_failures[0].contains("http://[2001:db8:1::200]:80/"));
}

#[test]
fn a_silence_still_running_at_the_end_counts() {
    let s = summarize(&[
        look(0, IP, &[A], true),
        look(100, IP, &[], true),
        look(900, IP, &[], true),
    ]);
    assert_eq!(
        s.longest_silence[&IP.parse().unwrap()],
        Duration::from_millis(800)
    );
    assert_eq!(s.owners[&IP.parse().unwrap()].len(), 1);
}

#[test]
fn watch_events_parse_and_deviations_name_the_service() {
    let event = serde_json::json!({
        "type": "MODIFIED",
        "object": {
            "metadata": {"name": "web"},
            "status": {"loadBalancer": {"ingress": [{"ip": "2001:db8:1::200"}, {"ip": "198.51.100.200"}]}},
        },
    });
    let state = parse_event(&event, Duration::from_millis(1500)).unwrap();
    assert_eq!(state.event, "MODIFIED");
    assert_eq!(state.ips[0], "198.51.100.200".parse::<IpAddr>().unwrap());
    let expected = BTreeMap::from([(
        "web".to_string(),
        vec![
            "2001:db8:1::200".parse().unwrap(),
            "198.51.100.200".parse().unwrap(),
        ],
    )]);
    assert!(ip_deviations(std::slice::from_ref(&state), &expected).is_empty());
    let cleared = parse_event(
        &serde_json::json!({"type": "MODIFIED", "object": {"metadata": {"name": "web"}, "status": {}}}),
        Duration::from_secs(2),
    )
    .unwrap();
    let other = parse_event(
        &serde_json::json!({"type": "ADDED", "object": {"metadata": {"name": "unrelated"}}}),
        Duration::from_secs(2),
    )
    .unwrap();
    let found = ip_deviations(&[state, cleared, other], &expected);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("2.000 s: Service web MODIFIED with IPs []"),
        "{}",
        found[0]
    );
    let garbage = serde_json::json!({"type": "ADDED", "object": {"metadata": {"name": "x"}, "status": {"loadBalancer": {"ingress": [{"ip": "nope"}]}}}});
    assert!(parse_event(&garbage, Duration::ZERO).is_err());
}

#[test]
fn only_answers_addressed_to_the_client_count_and_within_the_window() {
    use super::answer_capture::{answers_to, parse_fields};
    const CLIENT: &str = "02:fe:00:00:01:00";
    let text = "1796464463.100\t02:FE:00:00:00:02\t02:fe:00:00:01:00\t\t\t2001:db8:1::200\n\
                1796464463.150\t02:fe:00:00:00:03\t02:fe:00:00:01:00\t\t\t2001:db8:1::200\n\
                1796464463.160\t02:fe:00:00:00:01\t33:33:00:00:00:01\t\t\t2001:db8:1::200\n\
                1796464463.170\t02:fe:00:00:00:03\t02:fe:00:00:01:00\t2\t198.51.100.200\t\n\
                1796464463.180\t02:fe:00:00:00:01\tff:ff:ff:ff:ff:ff\t2\t198.51.100.200\t\n\
                1796464463.190\t02:fe:00:00:01:00\tff:ff:ff:ff:ff:ff\t1\t198.51.100.100\t\n\
                1796464464.000\t02:fe:00:00:00:01\t02:fe:00:00:01:00\t\t\t2001:db8:1::200\n";
    let answers = parse_fields(text, CLIENT).unwrap();
    assert_eq!(
        answers.len(),
        4,
        "broadcast, all-nodes and requests left out: {answers:?}"
    );
    let v6: IpAddr = "2001:db8:1::200".parse().unwrap();
    let v4: IpAddr = "198.51.100.200".parse().unwrap();
    let window = Duration::from_millis(350);
    assert_eq!(
        answers_to(&answers, v6, 1796464463.05, window),
        ["02:fe:00:00:00:02", "02:fe:00:00:00:03"],
        "two nodes answered one solicitation"
    );
    assert_eq!(
        answers_to(&answers, v4, 1796464463.05, window),
        ["02:fe:00:00:00:03"],
        "a gratuitous ARP to everyone is no answer"
    );
    assert_eq!(
        answers_to(&answers, v6, 1796464463.9, window),
        ["02:fe:00:00:00:01"]
    );
    assert!(answers_to(&answers, v6, 1796464465.0, window).is_empty());
    assert!(parse_fields("1.0\t02:fe:00:00:00:01\n", CLIENT).is_err());
    assert!(
        parse_fields(
            "x\t02:fe:00:00:00:01\t02:fe:00:00:01:00\t\t\t2001:db8::1\n",
            CLIENT
        )
        .is_err()
    );
}
