//! Any JSON as an `IPAddressPool` or `L2Advertisement` (what the apiserver would store were CEL
//! validation off): read by the controller's pool configuration and the speaker's model without
//! a panic; entries that do not parse become errors naming the entry.
#![no_main]

use ferrolb_controller::ipam::pool::PoolConfig;
use ferrolb_crds::{IPAddressPool, L2Advertisement};
use ferrolb_speaker::sources::{advertisement, pool_info};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pool) = serde_json::from_slice::<IPAddressPool>(data) {
        let _ = PoolConfig::from_object(&pool);
        let _ = pool_info(&pool);
    }
    if let Ok(ad) = serde_json::from_slice::<L2Advertisement>(data) {
        let _ = advertisement(&ad);
    }
});
