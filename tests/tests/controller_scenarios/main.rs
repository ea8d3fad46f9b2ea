//! The allocation rules of issue #3 on the real apiserver, against the real controller binary
//! running under the chart's RBAC. One scenario at a time (see `ferrolb_tests::scenario`).
//!
//! ```text
//!  handling   which Services are served, and what a served one shows
//!  families   single-stack IPv6, dual-stack
//!  requests   requested addresses and pools
//!  pools      pool rules, counts and changes
//!  sharing    allow-shared-ip
//!  stability  no needless moves or writes; metrics
//! ```

mod families;
mod handling;
mod pools;
mod requests;
mod sharing;
mod stability;

use serde_json::json;

/// The spec of a pool of `addresses`.
fn v4_pool(addresses: &[&str]) -> serde_json::Value {
    json!({ "addresses": addresses })
}
