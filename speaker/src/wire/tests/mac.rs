use std::collections::HashSet;

use super::super::Mac;
use super::{CLIENT_MAC, OUR_MAC};

#[test]
fn mac_displays_as_lowercase_colon_separated_hex() {
    assert_eq!(OUR_MAC.to_string(), "02:fe:00:00:00:01");
    assert_eq!(Mac::BROADCAST.to_string(), "ff:ff:ff:ff:ff:ff");
    assert_eq!(
        Mac([0xab, 0xcd, 0xef, 0x01, 0x23, 0x45]).to_string(),
        "ab:cd:ef:01:23:45"
    );
}

#[test]
fn mac_parses_what_it_displays_and_common_spellings() {
    for mac in [OUR_MAC, CLIENT_MAC, Mac::BROADCAST, Mac::ZERO] {
        assert_eq!(mac.to_string().parse::<Mac>(), Ok(mac));
    }
    assert_eq!("02:FE:00:00:00:AA".parse::<Mac>(), Ok(CLIENT_MAC));
    assert_eq!("02-fe-00-00-00-aa".parse::<Mac>(), Ok(CLIENT_MAC));
}

#[test]
fn mac_rejects_malformed_strings_and_says_what_it_expected() {
    for bad in [
        "",
        "02:fe:00:00:00",
        "02:fe:00:00:00:01:02",
        "2:fe:0:0:0:1",
        "02:fe:00:00:00:zz",
        "02:fe:00:00:00:+1",
        "02-fe:00:00:00:01",
        "02fe.0000.0001",
        "02:fe:00:00:00:01:",
        " 02:fe:00:00:00:01",
        "02:fe:00:00:00:0é",
    ] {
        let err = bad.parse::<Mac>().unwrap_err();
        assert_eq!(err.input, bad);
        assert!(err.to_string().contains("02:fe:00:00:00:01"), "{err}");
    }
}

#[test]
fn mac_constants_and_multicast_bit() {
    assert_eq!(Mac::BROADCAST, Mac([0xff; 6]));
    assert!(Mac::BROADCAST.is_multicast());
    assert!(Mac([0x33, 0x33, 0, 0, 0, 1]).is_multicast());
    assert!(!OUR_MAC.is_multicast());
    assert_eq!(Mac::from([2, 0xfe, 0, 0, 0, 1]), OUR_MAC);
    assert_eq!(OUR_MAC.octets(), [2, 0xfe, 0, 0, 0, 1]);
}

#[test]
fn mac_is_ordered_bytewise_and_hashable() {
    assert!(OUR_MAC < CLIENT_MAC);
    assert!(Mac::ZERO < OUR_MAC && CLIENT_MAC < Mac::BROADCAST);
    let set: HashSet<Mac> = [OUR_MAC, CLIENT_MAC, OUR_MAC].into_iter().collect();
    assert_eq!(set.len(), 2);
}
