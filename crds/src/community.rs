//! `Community`: names for BGP community values, and the pure parsing of the values a
//! `BGPAdvertisement` lists (`65000:100`, `large:65000:1:2`, or a name defined in a `Community`).

use std::fmt;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bgp_cel;

/// Desired state of a `Community`: named community values that `BGPAdvertisement.spec.communities`
/// may use instead of the numbers.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "Community",
    plural = "communities",
    category = "ferrolb",
    derive = "PartialEq",
    doc = "Names for BGP community values, usable in BGPAdvertisement.spec.communities.",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CommunitySpec {
    /// The names and their values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub communities: Vec<CommunityAlias>,
}

/// One named community value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CommunityAlias {
    /// The name advertisements use.
    #[schemars(schema_with = "bgp_cel::community_name_schema")]
    pub name: String,
    /// A standard community (`65000:100`) or a large one (`large:65000:1:2`).
    #[schemars(schema_with = "bgp_cel::community_value_schema")]
    pub value: String,
}

/// A BGP community value: standard (RFC 1997) or large (RFC 8092).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CommunityValue {
    /// `asn:value`, 16 bits each.
    Standard(u16, u16),
    /// `large:global:local1:local2`, 32 bits each.
    Large(u32, u32, u32),
}

impl fmt::Display for CommunityValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Standard(a, b) => write!(f, "{a}:{b}"),
            Self::Large(a, b, c) => write!(f, "large:{a}:{b}:{c}"),
        }
    }
}

/// What a `communities` entry of an advertisement is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommunityEntry {
    /// A value written out.
    Value(CommunityValue),
    /// The name of a value defined in a `Community` object.
    Name(String),
}

/// Why a community string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a community: {why}")]
pub struct CommunityError {
    /// The text as written.
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Parses a community value (`65000:100` or `large:1:2:3`).
pub fn parse_community_value(text: &str) -> Result<CommunityValue, CommunityError> {
    let fail = |why| CommunityError {
        text: text.to_string(),
        why,
    };
    if let Some(large) = text.strip_prefix("large:") {
        let parts: Vec<&str> = large.split(':').collect();
        let [a, b, c] = parts[..] else {
            return Err(fail(
                "a large community is large: and three numbers joined by \":\"",
            ));
        };
        let number = |s: &str| {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(fail("each part of a large community is a number"));
            }
            s.parse::<u32>()
                .map_err(|_| fail("each part of a large community is at most 4294967295"))
        };
        return Ok(CommunityValue::Large(number(a)?, number(b)?, number(c)?));
    }
    let parts: Vec<&str> = text.split(':').collect();
    let [a, b] = parts[..] else {
        return Err(fail(
            "a standard community is two numbers joined by \":\" (65000:100); a large one starts with large:",
        ));
    };
    let number = |s: &str| {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail("each part of a standard community is a number"));
        }
        s.parse::<u16>()
            .map_err(|_| fail("each part of a standard community is at most 65535"))
    };
    Ok(CommunityValue::Standard(number(a)?, number(b)?))
}

/// Reads one entry of `BGPAdvertisement.spec.communities`: text with a `:` is a value, anything
/// else the name of a value in a `Community` object.
pub fn parse_community_entry(text: &str) -> Result<CommunityEntry, CommunityError> {
    if text.contains(':') {
        parse_community_value(text).map(CommunityEntry::Value)
    } else {
        Ok(CommunityEntry::Name(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse() {
        assert_eq!(
            parse_community_value("65000:100"),
            Ok(CommunityValue::Standard(65000, 100))
        );
        assert_eq!(
            parse_community_value("0:0"),
            Ok(CommunityValue::Standard(0, 0))
        );
        assert_eq!(
            parse_community_value("large:4294967295:1:2"),
            Ok(CommunityValue::Large(u32::MAX, 1, 2))
        );
        for v in [
            CommunityValue::Standard(1, 65535),
            CommunityValue::Large(1, 2, 3),
        ] {
            assert_eq!(parse_community_value(&v.to_string()), Ok(v));
        }
    }

    #[test]
    fn bad_values_say_why() {
        for (text, why) in [
            (
                "65536:1",
                "each part of a standard community is at most 65535",
            ),
            ("1:-1", "each part of a standard community is a number"),
            ("1:", "each part of a standard community is a number"),
            (
                "1:2:3",
                "a standard community is two numbers joined by \":\" (65000:100); a large one starts with large:",
            ),
            (
                "large:1:2",
                "a large community is large: and three numbers joined by \":\"",
            ),
            (
                "large:1:2:4294967296",
                "each part of a large community is at most 4294967295",
            ),
            ("large:a:2:3", "each part of a large community is a number"),
        ] {
            assert_eq!(parse_community_value(text).unwrap_err().why, why, "{text}");
        }
    }

    #[test]
    fn entries_without_a_colon_are_names() {
        assert_eq!(
            parse_community_entry("no-export-to-peers"),
            Ok(CommunityEntry::Name("no-export-to-peers".into()))
        );
        assert_eq!(
            parse_community_entry("1:2"),
            Ok(CommunityEntry::Value(CommunityValue::Standard(1, 2)))
        );
        assert!(parse_community_entry("1:x").is_err());
    }
}
