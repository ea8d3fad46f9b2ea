//! The krew manifest template: a Plugin named ferrolb whose every platform installs the
//! binary this crate builds, with only the placeholders a release fills in.

#[test]
fn the_krew_template_installs_this_binary_on_every_platform() {
    let text = include_str!("../krew.yaml");
    let doc: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
    assert_eq!(doc["kind"], "Plugin");
    assert_eq!(doc["metadata"]["name"], "ferrolb");
    let platforms = doc["spec"]["platforms"].as_sequence().unwrap();
    assert!(platforms.len() >= 2);
    for p in platforms {
        assert_eq!(p["bin"], env!("CARGO_PKG_NAME"));
        assert_eq!(p["files"][0]["from"], env!("CARGO_PKG_NAME"));
        let uri = p["uri"].as_str().unwrap();
        assert!(
            uri.contains("VERSION") && uri.starts_with("https://"),
            "{uri}"
        );
        assert!(p["sha256"].as_str().unwrap().starts_with("SHA256_"));
    }
}
