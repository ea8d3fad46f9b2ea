//! The allocation rules, one test per rule, by topic (pure; no cluster). The helpers here
//! build pools and requests and unpack what [`Allocator::assign`] says.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_crds::address::parse_addresses;
use ferrolb_crds::contract::{annotation, reason};
use ferrolb_crds::{AddressCount, Family, LabelSelector, ServiceAllocation};

use super::allocator::Allocator;
use super::assignment::{Assigned, Assignment, Loss};
use super::error::AllocationError;
use super::pool::{PoolConfig, RuledOut};
use super::request::{Backends, FamilyPolicy, Port, Request, ServiceKey};

mod addresses;
mod families;
mod interning;
mod keeping;
mod pool_choice;
mod sharing;

fn pool(name: &str, addresses: &[&str]) -> PoolConfig {
    PoolConfig::new(name, parse_addresses(addresses).map_err(|e| e.to_string()))
}

fn v4() -> Request {
    Request {
        ports: vec![Port::tcp(80)].into(),
        ..Request::new(vec![Family::V4], FamilyPolicy::SingleStack)
    }
}

fn dual(policy: FamilyPolicy) -> Request {
    Request {
        families: vec![Family::V4, Family::V6].into(),
        policy,
        ..v4()
    }
}

fn sharing(k: &str, port: i32) -> Request {
    Request {
        sharing_key: Some(k.into()),
        ports: vec![Port::tcp(port)].into(),
        ..v4()
    }
}

fn allocation(edit: impl FnOnce(&mut ServiceAllocation)) -> Option<ServiceAllocation> {
    let mut s = ServiceAllocation::default();
    edit(&mut s);
    Some(s)
}

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("ns", name)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

fn no_labels() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn with_pools(pools: Vec<PoolConfig>) -> Allocator {
    let mut a = Allocator::new();
    a.set_pools(pools);
    a
}

fn assign(a: &mut Allocator, name: &str, req: &Request) -> Assigned {
    a.assign(&key(name), req, &no_labels(), &[])
}

/// What a successful assignment gives, and what was lost on the way.
fn ok(assigned: Assigned) -> (Assignment, Option<Loss>) {
    match assigned.result {
        Ok(assignment) => (assignment, assigned.lost),
        Err(e) => panic!("allocation failed: {e}"),
    }
}

/// Why an assignment failed, and what was lost on the way.
fn failed(assigned: Assigned) -> (AllocationError, Option<Loss>) {
    match assigned.result {
        Ok(assignment) => panic!("allocation should fail, got {assignment:?}"),
        Err(e) => (*e, assigned.lost),
    }
}

fn got(a: &mut Allocator, name: &str, req: &Request) -> (String, Vec<IpAddr>) {
    let o = assign(a, name, req)
        .result
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (o.pool.to_string(), o.ips.to_vec())
}

fn error(a: &mut Allocator, name: &str, req: &Request) -> AllocationError {
    failed(assign(a, name, req)).0
}

/// Held IPv4 and IPv6 addresses of `pool`.
fn assigned_per_family(a: &Allocator, pool: &str) -> (u128, u128) {
    let c = a.counts(pool).expect("a valid pool");
    (c.assigned_v4.0, c.assigned_v6.0)
}

/// Asserts that `error`'s message contains `words`.
#[track_caller]
fn assert_says(error: &AllocationError, words: &str) {
    let message = error.to_string();
    assert!(
        message.contains(words),
        "{message:?} does not say {words:?}"
    );
}
