//! Pure IPAM micro-benchmark: nanoseconds per allocate+release pair in a /12 pool.
//!
//! ```sh
//! cargo run --release -p ferrolb-controller --example ipam_bench [-- --runs 7 --quick --only NAME]
//! ```
//!
//! Prints one JSON object on stdout (what `cargo xtask bench` reads). Four scenarios, each timed
//! over many pairs, several runs, median reported:
//!
//! - `free_space_hot`: [`FreeSpace`] with 100,000 addresses taken from the bottom of the pool
//!   (one free interval); a pair is `allocate_lowest` then `release` of the same address.
//! - `free_space_churn`: 150,000 taken, then a pseudo-random 50,000 of them released (the pool is
//!   fragmented into tens of thousands of free intervals, 100,000 held); a pair is
//!   `allocate_lowest` (fills the lowest hole) then `release` of a pseudo-random held address, so
//!   the holes wander through the whole tree as they do under Service churn.
//! - `allocator_hot` / `allocator_churn`: the same two shapes through the full
//!   [`Allocator::assign`] + [`Allocator::release`] (one pool, SingleStack IPv4 request with one
//!   port, Services keyed by namespace/name), which adds pool selection, sharing bookkeeping and
//!   the per-Service maps.
//!
//! The pool is `10.0.0.0/12`: the addresses only ever live in this process's memory.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use fastrand::Rng;

use ferrolb_controller::ipam::request::{FamilyPolicy, Port};
use ferrolb_controller::ipam::{Allocator, FreeSpace, PoolConfig, Request, ServiceKey};
use ferrolb_crds::address::{parse_addresses, to_u128};
use ferrolb_crds::{AddressRange, Family};
use serde_json::{Value, json};

/// The pool every scenario uses: a /12 (1,048,576 addresses).
const POOL: &str = "10.0.0.0/12";
/// Addresses held while measuring.
const HELD: usize = 100_000;
/// Extra addresses taken and released again to fragment the churn scenarios' pools.
const FRAGMENTING: usize = 50_000;

struct Args {
    runs: usize,
    /// Run only the scenarios whose name contains this (for profiling one of them).
    only: Option<String>,
    free_space_pairs: usize,
    allocator_pairs: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        runs: 7,
        only: None,
        free_space_pairs: 2_000_000,
        allocator_pairs: 500_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => {
                args.runs = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .expect("--runs needs a positive number");
            }
            "--only" => args.only = Some(it.next().expect("--only needs a scenario name")),
            "--quick" => {
                args.runs = 3;
                args.free_space_pairs = 200_000;
                args.allocator_pairs = 50_000;
            }
            other => {
                eprintln!(
                    "usage: ipam_bench [--runs N] [--quick] [--only SCENARIO]; unknown argument {other:?}"
                );
                std::process::exit(2);
            }
        }
    }
    args
}

fn pool_ranges() -> Vec<AddressRange> {
    parse_addresses(&[POOL]).expect("a valid pool")
}

fn pool_config() -> PoolConfig {
    PoolConfig::new("bench", Ok(pool_ranges()))
}

fn request() -> Request {
    Request {
        ports: vec![Port::tcp(80)].into(),
        ..Request::new(vec![Family::V4], FamilyPolicy::SingleStack)
    }
}

/// Times `runs` runs of `pairs` calls of `pair` in a pool with `free_intervals` free intervals.
fn measure(runs: usize, pairs: usize, free_intervals: usize, mut pair: impl FnMut()) -> Measured {
    // One untimed warm-up run of a tenth of the size.
    for _ in 0..pairs / 10 {
        pair();
    }
    let ns = (0..runs)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..pairs {
                pair();
            }
            start.elapsed().as_nanos() as f64 / pairs as f64
        })
        .collect();
    Measured {
        pairs,
        free_intervals,
        ns,
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// What one scenario measured: pairs per run, free intervals before, nanoseconds per pair of
/// each run.
struct Measured {
    pairs: usize,
    free_intervals: usize,
    ns: Vec<f64>,
}

impl Measured {
    fn report(&self, name: &str, what: &str) -> Value {
        let ns = &self.ns;
        json!({
            "name": name,
            "what": what,
            "pairs_per_run": self.pairs,
            "free_intervals_before": self.free_intervals,
            "ns_per_pair": ns,
            "median_ns_per_pair": median(ns),
            "min_ns_per_pair": ns.iter().copied().fold(f64::INFINITY, f64::min),
            "max_ns_per_pair": ns.iter().copied().fold(0.0, f64::max),
        })
    }
}

/// A pool with `HELD + FRAGMENTING` addresses taken and a pseudo-random `FRAGMENTING` of them
/// released again: returns the space, the held addresses and the number of free intervals.
fn fragmented_space(rng: &mut Rng) -> (FreeSpace, Vec<u128>, usize) {
    let mut space = FreeSpace::new(Family::V4, &pool_ranges(), false);
    let mut held: Vec<u128> = (0..HELD + FRAGMENTING)
        .map(|_| space.allocate_lowest().expect("room in a /12"))
        .collect();
    for _ in 0..FRAGMENTING {
        let i = rng.usize(..held.len());
        let ip = held.swap_remove(i);
        assert!(space.release(ip));
    }
    let intervals = count_intervals(&held);
    (space, held, intervals)
}

/// Free intervals of a pool whose held addresses are `held`: the gaps between them.
fn count_intervals(held: &[u128]) -> usize {
    let range = pool_ranges()[0];
    let mut sorted = held.to_vec();
    sorted.sort_unstable();
    let (Some(&lowest), Some(&highest)) = (sorted.first(), sorted.last()) else {
        return 1;
    };
    let inner = sorted.windows(2).filter(|w| w[1] > w[0] + 1).count();
    inner + usize::from(lowest > range.first_bits()) + usize::from(highest < range.last_bits())
}

fn free_space_hot(args: &Args, _rng: &mut Rng) -> Measured {
    let pairs = args.free_space_pairs;
    let mut space = FreeSpace::new(Family::V4, &pool_ranges(), false);
    for _ in 0..HELD {
        space.allocate_lowest().expect("room in a /12");
    }
    measure(args.runs, pairs, 1, || {
        let ip = space.allocate_lowest().expect("room");
        black_box(space.release(black_box(ip)));
    })
}

fn free_space_churn(args: &Args, rng: &mut Rng) -> Measured {
    let pairs = args.free_space_pairs;
    let (mut space, mut held, intervals) = fragmented_space(rng);
    measure(args.runs, pairs, intervals, || {
        let ip = space.allocate_lowest().expect("room");
        let i = rng.usize(..held.len());
        let old = std::mem::replace(&mut held[i], ip);
        black_box(space.release(old));
    })
}

fn service_key(i: usize) -> ServiceKey {
    ServiceKey::new("bench", format!("svc-{i}"))
}

fn assign(a: &mut Allocator, key: &ServiceKey, req: &Request) -> bool {
    black_box(a.assign(key, req, &BTreeMap::new(), &[]).result.is_ok())
}

fn allocator_hot(args: &Args, _rng: &mut Rng) -> Measured {
    let pairs = args.allocator_pairs;
    let req = request();
    let mut a = Allocator::new();
    a.set_pools(vec![pool_config()]);
    for i in 0..HELD {
        assert!(assign(&mut a, &service_key(i), &req));
    }
    let extra = service_key(HELD);
    measure(args.runs, pairs, 1, || {
        assign(&mut a, &extra, &req);
        black_box(a.release(&extra));
    })
}

fn allocator_churn(args: &Args, rng: &mut Rng) -> Measured {
    let pairs = args.allocator_pairs;
    let req = request();
    let mut a = Allocator::new();
    a.set_pools(vec![pool_config()]);
    let mut holders: Vec<ServiceKey> = (0..HELD + FRAGMENTING).map(service_key).collect();
    for k in &holders {
        assert!(assign(&mut a, k, &req));
    }
    let mut spare: Vec<ServiceKey> = Vec::new();
    for _ in 0..FRAGMENTING {
        let i = rng.usize(..holders.len());
        let k = holders.swap_remove(i);
        a.release(&k);
        spare.push(k);
    }
    let held: Vec<u128> = a
        .assigned_services()
        .flat_map(|(_, assignment)| assignment.ips.iter().map(|ip| to_u128(*ip)))
        .collect();
    let intervals = count_intervals(&held);
    measure(args.runs, pairs, intervals, || {
        let k = spare.pop().expect("a spare key");
        assign(&mut a, &k, &req);
        let i = rng.usize(..holders.len());
        let old = std::mem::replace(&mut holders[i], k);
        black_box(a.release(&old));
        spare.push(old);
    })
}

type Scenario = fn(&Args, &mut Rng) -> Measured;

fn main() {
    let args = parse_args();
    let mut rng = Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let all: [(&str, &str, Scenario); 4] = [
        (
            "free_space_hot",
            "FreeSpace::allocate_lowest + release of the same address, 100k held below one free interval",
            free_space_hot,
        ),
        (
            "free_space_churn",
            "FreeSpace::allocate_lowest + release of a pseudo-random held address, 100k held, fragmented",
            free_space_churn,
        ),
        (
            "allocator_hot",
            "Allocator::assign + release of the same Service (one pool, SingleStack IPv4), 100k held",
            allocator_hot,
        ),
        (
            "allocator_churn",
            "Allocator::assign of a new Service + release of a pseudo-random holder, 100k held, fragmented",
            allocator_churn,
        ),
    ];
    let scenarios: Vec<Value> = all
        .iter()
        .filter(|(name, ..)| args.only.as_ref().is_none_or(|o| name.contains(o.as_str())))
        .map(|(name, what, run)| run(&args, &mut rng).report(name, what))
        .collect();
    let report = json!({
        "pool": POOL,
        "held": HELD,
        "runs": args.runs,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "scenarios": scenarios,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("JSON serialises")
    );
}
