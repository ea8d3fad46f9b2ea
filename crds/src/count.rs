//! Address counts that may exceed what JSON integers carry (a /64 pool holds 2^64 addresses).

use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of addresses. On the wire it is an integer while it fits an int64 and a decimal
/// string beyond that, like Kubernetes' int-or-string fields, so IPv6 pools of any size report
/// exact counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressCount(pub u128);

impl fmt::Display for AddressCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for AddressCount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match i64::try_from(self.0) {
            Ok(n) => serializer.serialize_i64(n),
            Err(_) => serializer.serialize_str(&self.0.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for AddressCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Int(u64),
            Text(String),
        }
        match Wire::deserialize(deserializer)? {
            Wire::Int(n) => Ok(AddressCount(u128::from(n))),
            Wire::Text(s) => s.parse().map(AddressCount).map_err(|_| {
                serde::de::Error::custom(format!(
                    "address count {s:?} is not a non-negative integer"
                ))
            }),
        }
    }
}

impl JsonSchema for AddressCount {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AddressCount".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "x-kubernetes-int-or-string": true })
    }

    fn inline_schema() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_counts_are_integers_and_huge_ones_exact_strings() {
        assert_eq!(serde_json::to_string(&AddressCount(254)).unwrap(), "254");
        assert_eq!(
            serde_json::to_string(&AddressCount(1 << 64)).unwrap(),
            "\"18446744073709551616\""
        );
        assert_eq!(
            serde_json::to_string(&AddressCount(i64::MAX as u128)).unwrap(),
            i64::MAX.to_string()
        );
    }

    #[test]
    fn both_forms_read_back() {
        let n: AddressCount = serde_json::from_str("\"18446744073709551616\"").unwrap();
        assert_eq!(n, AddressCount(1 << 64));
        let n: AddressCount = serde_json::from_str("12").unwrap();
        assert_eq!(n, AddressCount(12));
        assert!(serde_json::from_str::<AddressCount>("\"-1\"").is_err());
    }
}
