//! `ferrolb-bench-arp`: an ARP load generator for `cargo xtask bench`. Run in the lab's client
//! namespace, it sends ARP requests (RFC 826) at a fixed rate, round robin over the target
//! addresses, and times each reply, printing one JSON object:
//!
//! ```text
//! ferrolb-bench-arp --interface eth0 --targets 198.19.0.0-198.19.3.231 --rate 10000 \
//!     --duration-s 10 [--warmup-s 1] [--slots 198.51.100.128/26] [--drain-ms 500] \
//!     [--sender-policy idle|fifo]
//!
//!  sender thread ── raw frame, broadcast ──> lab0 ──> speakers (or a node's kernel)
//!     paced by the monotonic clock; CLOCK_REALTIME read just before each send
//!  receiver thread <── unicast ARP reply ── kernel receive timestamp (SO_TIMESTAMPNS,
//!     CLOCK_REALTIME) - send time = round trip
//! ```
//!
//! ARP has no request id, so the generator makes one: the sender protocol address of request
//! `i` is one of the `--slots` addresses (inside the lab subnet, never assigned to anything) and
//! every responder copies it into its reply's target protocol address. A (target, slot) pair is
//! reused only after `targets x slots` requests; the last [`HISTORY`] requests of each pair are
//! kept, and a reply belongs to the newest unanswered one sent before the reply's kernel
//! timestamp (so a reply the reader gets to late still finds its request). A request that
//! leaves the history unanswered counts as lost.
//!
//! The generator stands for a client on another machine, so its own scheduling must not delay
//! the responder under test. The lab's namespaces share the machine's CPUs, and a userspace
//! responder is woken on the CPU that handled the request, which is the sender's: by default
//! (`--sender-policy idle`) the sender thread runs `SCHED_IDLE`, so whatever the request wakes
//! runs as soon as the send's softirq ends. Under `SCHED_FIFO` (`--sender-policy fifo`, what the
//! bench used until 2026-12-02) the woken responder waits until the sender has gone back to
//! sleep, and arming that sleep's timer costs about 10 µs on the bench VM; the kernel, which
//! answers inside the send's softirq, never pays it. Either way, when the sender falls behind
//! it sends the missed requests at once: the schedule is kept, and how late each send was is
//! reported.
//!
//! `ferrolb-bench-arp respond` is the other half of the figure: a minimal reference responder
//! ([`respond`]) that the same generator runs against.
//!
//! Raw `AF_PACKET` sockets need CAP_NET_RAW; all `unsafe` is in [`raw`].

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "../common/cli.rs"]
mod cli;
mod raw;
mod respond;

const USAGE: &str = "usage: ferrolb-bench-arp --targets <a-b|ip|cidr>[,...] [--interface eth0] [--rate 10000]\n\
                     [--duration-s 10] [--warmup-s 1] [--slots 198.51.100.128/26] [--drain-ms 500]\n\
                     [--sender-policy idle|fifo]\n\
                     Sends ARP requests round robin over the targets at --rate per second and prints\n\
                     the reply round trips (kernel receive timestamp - send time) as JSON.\n\
                     ferrolb-bench-arp respond --addresses <a-b|ip|cidr>[,...] [--interface eth0]\n\
                     [--duration-s 15] [--spin]: the reference responder (see respond.rs).";

#[derive(Debug, PartialEq)]
struct Args {
    interface: String,
    targets: Vec<Ipv4Addr>,
    slots: Vec<Ipv4Addr>,
    rate: u32,
    duration: Duration,
    warmup: Duration,
    drain: Duration,
    sender_policy: SenderPolicy,
}

/// How the sender thread is scheduled (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SenderPolicy {
    /// `SCHED_IDLE`: anything woken on its CPU runs first.
    Idle,
    /// `SCHED_FIFO` priority 10: never delayed by what it wakes.
    Fifo,
}

impl SenderPolicy {
    fn name(self) -> &'static str {
        match self {
            SenderPolicy::Idle => "idle",
            SenderPolicy::Fifo => "fifo",
        }
    }
}

/// `a-b`, `a/len` or a single address, comma-separated, in order.
fn parse_addresses(s: &str) -> Result<Vec<Ipv4Addr>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parse = |v: &str| {
            v.parse::<Ipv4Addr>()
                .map_err(|_| format!("{v:?} is not an IPv4 address"))
        };
        let (first, last) = if let Some((a, b)) = part.split_once('-') {
            (u32::from(parse(a)?), u32::from(parse(b)?))
        } else if let Some((a, len)) = part.split_once('/') {
            let len: u32 = len
                .parse()
                .ok()
                .filter(|l| *l <= 32)
                .ok_or_else(|| format!("{part:?}: bad prefix length"))?;
            let size = 1u64 << (32 - len);
            let base = u32::from(parse(a)?) & !((size - 1) as u32);
            (base, base + (size - 1) as u32)
        } else {
            let a = u32::from(parse(part)?);
            (a, a)
        };
        if last < first {
            return Err(format!("{part:?}: the range is backwards"));
        }
        if u64::from(last - first) + out.len() as u64 >= 1 << 20 {
            return Err("more than a million addresses".into());
        }
        out.extend((first..=last).map(Ipv4Addr::from));
    }
    if out.is_empty() {
        return Err(format!("{s:?} holds no address"));
    }
    Ok(out)
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        interface: "eth0".into(),
        targets: Vec::new(),
        slots: parse_addresses("198.51.100.128/26")?,
        rate: 10_000,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        drain: Duration::from_millis(500),
        sender_policy: SenderPolicy::Idle,
    };
    let mut flags = cli::Flags::new(args);
    while let Some(flag) = flags.next_flag() {
        let seconds = |v: String| {
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("{v:?} is not a number of seconds"))
        };
        let mut value = || flags.value(&flag);
        match flag.as_str() {
            "--interface" => a.interface = value()?,
            "--targets" => a.targets = parse_addresses(&value()?)?,
            "--slots" => a.slots = parse_addresses(&value()?)?,
            "--rate" => {
                let v = value()?;
                a.rate = v
                    .parse()
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or_else(|| format!("--rate: {v:?} is not a positive number"))?;
            }
            "--duration-s" => a.duration = seconds(value()?)?,
            "--warmup-s" => a.warmup = seconds(value()?)?,
            "--drain-ms" => {
                let v = value()?;
                a.drain = Duration::from_millis(
                    v.parse()
                        .map_err(|_| format!("--drain-ms: {v:?} is not a number"))?,
                );
            }
            "--sender-policy" => {
                a.sender_policy = match value()?.as_str() {
                    "idle" => SenderPolicy::Idle,
                    "fifo" => SenderPolicy::Fifo,
                    other => {
                        return Err(format!(
                            "--sender-policy: {other:?} is neither \"idle\" nor \"fifo\""
                        ));
                    }
                };
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.targets.is_empty() {
        return Err("--targets is required".into());
    }
    Ok(a)
}

/// Nanoseconds since the epoch, `CLOCK_REALTIME` (the clock of kernel receive timestamps).
fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// An ARP request (opcode 1) for `target` from (`mac`, `sender`), Ethernet broadcast, 42 bytes.
fn arp_request(mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&sender.octets());
    // Target hardware address: zero (unknown).
    f[38..42].copy_from_slice(&target.octets());
    f
}

/// An ARP reply addressed to `mac`: (replier MAC, replier address, our target address).
fn parse_reply(frame: &[u8], mac: [u8; 6]) -> Option<([u8; 6], Ipv4Addr, Ipv4Addr)> {
    if frame.len() < 42 || frame[12..14] != [0x08, 0x06] {
        return None;
    }
    let arp = &frame[14..42];
    let header_ok = arp[0..2] == [0, 1] && arp[2..4] == [0x08, 0x00] && arp[4] == 6 && arp[5] == 4;
    if !header_ok || arp[6..8] != [0, 2] || arp[18..24] != mac {
        return None;
    }
    let octets = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    let mut sender = [0u8; 6];
    sender.copy_from_slice(&arp[8..14]);
    Some((sender, octets(&arp[14..18]), octets(&arp[24..28])))
}

/// Requests remembered per (target, slot) pair.
const HISTORY: usize = 4;

/// One request.
#[derive(Clone, Copy, Debug, Default)]
struct Pending {
    /// Request number + 1 (0: never sent).
    seq: u64,
    sent_ns: u64,
    answered: bool,
    measured: bool,
}

#[derive(Debug, Default)]
struct Book {
    /// `HISTORY` requests per pair, pair `p` at `p * HISTORY ..`, by round modulo `HISTORY`.
    pending: Vec<Pending>,
    rtt_ns: Vec<u64>,
    lost: u64,
    duplicates: u64,
    replies_by_mac: BTreeMap<String, u64>,
    /// Per target: the MACs that replied (normally one).
    repliers: Vec<Vec<[u8; 6]>>,
}

fn mac_text(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn distribution_us(ns: &[u64]) -> serde_json::Value {
    let mut v = ns.to_vec();
    v.sort_unstable();
    let pick = |p: f64| -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1] as f64 / 1000.0
    };
    let mean = if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0
    };
    serde_json::json!({
        "count": v.len(),
        "p50": pick(50.0), "p90": pick(90.0), "p99": pick(99.0), "p999": pick(99.9),
        "max": pick(100.0), "mean": mean,
    })
}

fn main() {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().is_some_and(|a| a == "respond") {
        argv.remove(0);
        let result = respond::parse_args(argv).and_then(|a| respond::run(&a));
        if let Err(e) = result {
            eprintln!("ferrolb-bench-arp: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args = cli::parsed_or_exit("ferrolb-bench-arp", USAGE, parse_args(argv));
    if let Err(e) = run(&args) {
        eprintln!("ferrolb-bench-arp: {e}");
        std::process::exit(1);
    }
}

/// `interface`'s index and MAC, from sysfs.
fn interface(interface: &str) -> Result<(i32, [u8; 6]), String> {
    let sys = |name: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{interface}/{name}"))
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("reading {name} of {interface}: {e}"))
    };
    let ifindex: i32 = sys("ifindex")?
        .parse()
        .map_err(|_| "bad ifindex".to_string())?;
    let text = sys("address")?;
    let bytes: Vec<u8> = text
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    let mac = bytes.try_into().map_err(|_| format!("bad MAC {text:?}"))?;
    Ok((ifindex, mac))
}

/// Each address's position in `addresses`.
fn positions(addresses: &[Ipv4Addr]) -> HashMap<Ipv4Addr, usize> {
    addresses.iter().enumerate().map(|(i, a)| (*a, i)).collect()
}

fn run(args: &Args) -> Result<(), String> {
    let (ifindex, mac) = interface(&args.interface)?;
    let tx = raw::Socket::open(ifindex, 0).map_err(|e| format!("opening the send socket: {e}"))?;
    let rx = raw::Socket::open(ifindex, 0x0806)
        .map_err(|e| format!("opening the receive socket (needs CAP_NET_RAW): {e}"))?;
    rx.prepare_receiver()
        .map_err(|e| format!("configuring the receive socket: {e}"))?;
    raw::fine_timer_slack();

    let n_targets = args.targets.len();
    let n_slots = args.slots.len();
    let (target_index, slot_index) = (positions(&args.targets), positions(&args.slots));
    let book = Arc::new(Mutex::new(Book {
        pending: vec![Pending::default(); n_targets * n_slots * HISTORY],
        repliers: vec![Vec::new(); n_targets],
        ..Default::default()
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (book, stop) = (book.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            let mut foreign = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Some((len, rx_ns)) = rx.recv(&mut buf) else {
                    continue;
                };
                let Some((from, target, slot)) = parse_reply(&buf[..len], mac) else {
                    foreign += 1;
                    continue;
                };
                let (Some(&t), Some(&s)) = (target_index.get(&target), slot_index.get(&slot))
                else {
                    foreign += 1;
                    continue;
                };
                let mut b = book.lock().unwrap();
                *b.replies_by_mac.entry(mac_text(&from)).or_default() += 1;
                if !b.repliers[t].contains(&from) {
                    b.repliers[t].push(from);
                }
                let base = (t * n_slots + s) * HISTORY;
                let request = b.pending[base..base + HISTORY]
                    .iter_mut()
                    .filter(|p| p.seq != 0 && !p.answered && p.sent_ns <= rx_ns)
                    .max_by_key(|p| p.seq);
                let Some(p) = request else {
                    b.duplicates += 1;
                    continue;
                };
                p.answered = true;
                if p.measured {
                    let rtt = rx_ns - p.sent_ns;
                    b.rtt_ns.push(rtt);
                }
            }
            (foreign, rx.stats())
        })
    };

    // Sender: request i at start + i / rate.
    let period_ns = 1e9 / f64::from(args.rate);
    let total = ((args.warmup + args.duration).as_secs_f64() * f64::from(args.rate)) as u64;
    let warmup = (args.warmup.as_secs_f64() * f64::from(args.rate)) as u64;
    let mut lateness_ns = Vec::with_capacity((total - warmup) as usize);
    let mut send_errors = 0u64;
    let policy_granted = raw::set_scheduling(args.sender_policy);
    let pairs = (n_targets * n_slots) as u64;
    let start = Instant::now();
    let mut measured_start = None;
    for i in 0..total {
        let due = start + Duration::from_nanos((i as f64 * period_ns) as u64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if i == warmup {
            measured_start = Some(Instant::now());
        }
        let t = (i % n_targets as u64) as usize;
        let s = ((i / n_targets as u64) % n_slots as u64) as usize;
        let frame = arp_request(mac, args.slots[s], args.targets[t]);
        let measured = i >= warmup;
        {
            let mut b = book.lock().unwrap();
            let at = (t * n_slots + s) * HISTORY + ((i / pairs) as usize % HISTORY);
            let sent_ns = realtime_ns();
            let p = &mut b.pending[at];
            let lost = p.seq != 0 && !p.answered && p.measured;
            *p = Pending {
                seq: i + 1,
                sent_ns,
                answered: false,
                measured,
            };
            if lost {
                b.lost += 1;
            }
            if let Err(e) = tx.send(&frame) {
                send_errors += 1;
                b.pending[at].measured = false;
                if send_errors == 1 {
                    eprintln!("ferrolb-bench-arp: send failed: {e}");
                }
            }
        }
        if measured {
            lateness_ns.push(Instant::now().saturating_duration_since(due).as_nanos() as u64);
        }
    }
    let send_s = measured_start.map_or(0.0, |t| t.elapsed().as_secs_f64());
    std::thread::sleep(args.drain);
    stop.store(true, Ordering::Relaxed);
    let (foreign, (kernel_packets, kernel_drops)) =
        receiver.join().map_err(|_| "receiver panicked")?;

    let b = book.lock().unwrap();
    let unanswered = b
        .pending
        .iter()
        .filter(|p| p.seq != 0 && p.measured && !p.answered)
        .count() as u64;
    let measured_sent = total - warmup - send_errors.min(total - warmup);
    let out = serde_json::json!({
        "interface": args.interface,
        "targets": n_targets,
        "slots": n_slots,
        "rate_requested": args.rate,
        "warmup_s": args.warmup.as_secs_f64(),
        "sent": total,
        "measured_sent": measured_sent,
        "send_seconds": send_s,
        "achieved_rate": if send_s > 0.0 { (total - warmup) as f64 / send_s } else { 0.0 },
        "send_errors": send_errors,
        "sender_policy": args.sender_policy.name(),
        "sender_policy_granted": policy_granted,
        "answered": b.rtt_ns.len(),
        "lost": b.lost + unanswered,
        "duplicates": b.duplicates,
        "foreign_frames": foreign,
        "receive_socket": { "packets": kernel_packets, "drops": kernel_drops },
        "rtt_us": distribution_us(&b.rtt_ns),
        "send_lateness_us": distribution_us(&lateness_ns),
        "replies_by_mac": b.replies_by_mac,
        "targets_never_answered": b.repliers.iter().filter(|r| r.is_empty()).count(),
        "targets_answered_by_several_macs": b.repliers.iter().filter(|r| r.len() > 1).count(),
    });
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_lists_expand_ranges_prefixes_and_singles() {
        let a = parse_addresses("198.19.0.254-198.19.1.1, 198.51.100.128/31,203.0.113.7").unwrap();
        let text: Vec<String> = a.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "198.19.0.254",
                "198.19.0.255",
                "198.19.1.0",
                "198.19.1.1",
                "198.51.100.128",
                "198.51.100.129",
                "203.0.113.7"
            ]
        );
        assert!(parse_addresses("198.19.0.9-198.19.0.1").is_err());
        assert!(parse_addresses("").is_err());
    }

    #[test]
    fn requests_are_broadcast_and_replies_name_their_slot() {
        let mac = [2, 0xfe, 0, 0, 1, 0];
        let req = arp_request(
            mac,
            Ipv4Addr::new(198, 51, 100, 130),
            Ipv4Addr::new(198, 19, 0, 5),
        );
        assert_eq!(&req[0..6], &[0xff; 6]);
        assert_eq!(&req[20..22], &[0, 1]);
        assert_eq!(&req[28..32], &[198, 51, 100, 130]);
        assert_eq!(&req[38..42], &[198, 19, 0, 5]);
        // The reply a responder builds: swap sender and target, opcode 2, its own MAC as sender.
        let owner = [2, 0xfe, 0, 0, 0, 2];
        let mut reply = req;
        reply[0..6].copy_from_slice(&mac);
        reply[6..12].copy_from_slice(&owner);
        reply[20..22].copy_from_slice(&[0, 2]);
        reply[22..28].copy_from_slice(&owner);
        reply[28..32].copy_from_slice(&[198, 19, 0, 5]);
        reply[32..38].copy_from_slice(&mac);
        reply[38..42].copy_from_slice(&[198, 51, 100, 130]);
        assert_eq!(
            parse_reply(&reply, mac),
            Some((
                owner,
                Ipv4Addr::new(198, 19, 0, 5),
                Ipv4Addr::new(198, 51, 100, 130)
            ))
        );
        // A reply to someone else, and the request itself, are not ours.
        assert_eq!(parse_reply(&reply, owner), None);
        assert_eq!(parse_reply(&req, mac), None);
    }

    #[test]
    fn arguments_default_to_ten_thousand_per_second() {
        let strings = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = parse_args(strings(&["--targets", "198.19.0.0/30"])).unwrap();
        assert_eq!((a.rate, a.targets.len(), a.slots.len()), (10_000, 4, 64));
        assert_eq!(a.interface, "eth0");
        assert_eq!(a.sender_policy, SenderPolicy::Idle);
        let fifo = parse_args(strings(&[
            "--targets",
            "198.19.0.1",
            "--sender-policy=fifo",
        ]));
        assert_eq!(fifo.unwrap().sender_policy, SenderPolicy::Fifo);
        assert!(
            parse_args(strings(&[
                "--targets",
                "198.19.0.1",
                "--sender-policy",
                "rr"
            ]))
            .is_err()
        );
        assert!(parse_args(strings(&[])).is_err());
        assert!(parse_args(strings(&["--targets", "198.19.0.1", "--rate", "0"])).is_err());
    }
}
