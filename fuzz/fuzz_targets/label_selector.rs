//! Any JSON as a label selector (as in `serviceAllocation.namespaceSelectors`,
//! `nodeSelectors`), matched against labels also taken from the input: deserialized or refused,
//! matched without a panic.
#![no_main]

use std::collections::BTreeMap;

use ferrolb_crds::selector::LabelSelector;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(selector) = serde_json::from_slice::<LabelSelector>(data) else {
        return;
    };
    let mut labels: BTreeMap<String, String> = selector.match_labels.clone();
    let _ = selector.matches(&labels);
    labels.insert("app".into(), "web".into());
    let _ = selector.matches(&labels);
    let _ = selector.matches(&BTreeMap::new());
});
