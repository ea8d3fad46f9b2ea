//! Any text as an `IPAddressPool` address entry (CIDR, range or single address): parsed or
//! refused with a message, never a panic; a parsed range is ordered and of one family.
#![no_main]

use ferrolb_crds::address::{parse_addresses, parse_entry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(range) = parse_entry(text) {
        assert!(range.first_bits() <= range.last_bits());
        assert_eq!(range.first().is_ipv4(), range.last().is_ipv4());
        assert!(range.contains(range.first()) && range.contains(range.last()));
    }
    let entries: Vec<&str> = text.split('\n').collect();
    let _ = parse_addresses(&entries);
});
