//! CEL `x-kubernetes-validations` and hand-written schemas for fields whose rules JSON Schema
//! cannot express.
//!
//! The address rules mirror [`crate::address::parse_entry`] one for one, so `kubectl apply` of a bad
//! pool fails at the apiserver with the message the controller would give. They rely on the
//! Kubernetes CEL IP/CIDR library (`isIP`, `ip`, `isCIDR`, `cidr`, Kubernetes >= 1.31) and the
//! strings extension. CEL has no way to compare two addresses, so range order compares the
//! addresses expanded to fixed-width text (`198.051.100.007`, `2001:0db8:0000:...`), whose
//! lexicographic order is numeric order.
//!
//! Every string has a `maxLength` and every list a `maxItems`: the apiserver refuses a CRD whose
//! rules' estimated cost is unbounded.

use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

/// Longest accepted address entry: two full IPv6 addresses, a dash and spaces fit with room.
pub const MAX_ADDRESS_ENTRY_LEN: u64 = 90;
/// Most entries one pool may list.
pub const MAX_ADDRESS_ENTRIES: u64 = 64;

// Two limits of the apiserver's CRD rule environment shape these rules:
// - there is no `cel.bind`; `[expr].all(x, body)` binds `x` to `expr` instead, so a sub-expression
//   is computed once;
// - the static cost estimator treats any string made from an IP, a CIDR or an int (`string(..)`)
//   as unbounded, so messages quote the entry as written, and numbers are printed by indexing
//   lists of literals.

/// `body` with `var` bound to `expr`.
fn let_in(var: &str, expr: &str, body: &str) -> String {
    format!("[{expr}].all({var}, {body})")
}

/// `s` is `a-b` with both ends IP addresses.
const IS_RANGE: &str =
    "(s.split('-').size() == 2 && isIP(s.split('-')[0].trim()) && isIP(s.split('-')[1].trim()))";
/// `s` is `ip/digits` (a CIDR, perhaps with an out-of-range prefix).
const IS_CIDR_SHAPE: &str = "(s.split('/').size() == 2 && isIP(s.split('/')[0]) && s.split('/')[1].matches('^(0|[1-9][0-9]{0,2})$'))";
/// The range ends of the entry, as written, for messages.
const START: &str = "self.trim().split('-')[0].trim()";
const END: &str = "self.trim().split('-')[1].trim()";

fn entry_rule(body: &str) -> String {
    let_in("s", "self.trim()", body)
}

fn decimal_literals(n: usize) -> String {
    let items: Vec<String> = (0..n).map(|i| format!("'{i}'")).collect();
    format!("[{}]", items.join(","))
}

/// Whether range start `a` is at or before range end `b` (same family). CEL cannot compare
/// addresses, so find the first bit where they differ, `i`: the prefix `a/i` contains `b` but
/// `a/(i+1)` does not; `a` is before `b` exactly when that bit of `a` is 0, i.e. when `a/(i+1)`
/// contains the network address of `a/i`.
fn start_not_after_end() -> String {
    let bits: Vec<String> = (0..128).map(|i| i.to_string()).collect();
    let p = decimal_literals(129);
    format!(
        "ip(a) == ip(b) || [{bits}].exists(i, i < (ip(a).family() == 4 ? 32 : 128) \
         && cidr(a + '/' + {p}[i]).containsIP(b) \
         && !cidr(a + '/' + {p}[i + 1]).containsIP(b) \
         && cidr(a + '/' + {p}[i + 1]).containsIP(cidr(a + '/' + {p}[i]).masked().ip()))",
        bits = bits.join(",")
    )
}

/// The IPv4 network of CIDR entry `self` as text, computed octet by octet.
fn ipv4_network_text() -> String {
    let prefix = "int(self.trim().split('/')[1])";
    let names = decimal_literals(256);
    let octets: Vec<String> = (0..4)
        .map(|k| {
            let o = format!("int(self.trim().split('/')[0].split('.')[{k}])");
            let kept = format!(
                "({prefix} >= {hi} ? 8 : ({prefix} <= {lo} ? 0 : {prefix} - {lo}))",
                hi = 8 * (k + 1),
                lo = 8 * k
            );
            format!("{names}[{o} - {o} % [256, 128, 64, 32, 16, 8, 4, 2, 1][{kept}]]")
        })
        .collect();
    octets.join(" + '.' + ")
}

fn rule(rule: String, message_expression: String) -> Value {
    json!({ "rule": rule, "messageExpression": message_expression })
}

/// Rules for one `spec.addresses` entry, in the order the Rust parser checks them.
pub fn address_entry_rules() -> Value {
    let form = rule(
        entry_rule(&format!("isIP(s) || isCIDR(s) || {IS_RANGE} || {IS_CIDR_SHAPE}")),
        "self.trim().lowerAscii().matches('(^|[-\\\\s])(::|(0{1,4}:){5})ffff:([0-9.]+|[0-9a-f]{1,4}:[0-9a-f]{1,4})([-/\\\\s]|$)') \
           ? '\"' + self + '\" holds an IPv4-mapped IPv6 address; write the IPv4 address instead' \
           : self.trim().contains('-') \
           ? 'range \"' + self + '\" must be two IP addresses joined by \"-\"' \
           : '\"' + self + '\" is not an IP address, a CIDR (198.51.100.0/24) or a range (198.51.100.10-198.51.100.20)'"
            .into(),
    );
    let prefix = rule(
        entry_rule(&format!("!{IS_CIDR_SHAPE} || isCIDR(s)")),
        "'prefix length /' + self.trim().split('/')[1] + ' is out of range for ' \
           + (self.contains(':') ? 'IPv6 (0 to 128)' : 'IPv4 (0 to 32)')"
            .into(),
    );
    let host_bits = rule(
        entry_rule("!isCIDR(s) || cidr(s) == cidr(s).masked()"),
        format!(
            "'\"' + self.trim() + '\" has host bits set; the network address is ' + (self.contains(':') \
               ? 'the address with every bit after /' + self.trim().split('/')[1] + ' cleared' \
               : {} + '/' + self.trim().split('/')[1])",
            ipv4_network_text()
        ),
    );
    let families = rule(
        entry_rule(&format!(
            "!{IS_RANGE} || ip(s.split('-')[0].trim()).family() == ip(s.split('-')[1].trim()).family()"
        )),
        format!(
            "'range ' + {START} + '-' + {END} + ' mixes IPv4 and IPv6; use one range per family'"
        ),
    );
    let order = rule(
        entry_rule(&format!(
            "!{IS_RANGE} || {}",
            let_in(
                "a",
                "s.split('-')[0].trim()",
                &let_in(
                    "b",
                    "s.split('-')[1].trim()",
                    &format!(
                        "ip(a).family() != ip(b).family() || {}",
                        start_not_after_end()
                    )
                )
            )
        )),
        format!(
            "'range start ' + {START} + ' is after its end ' + {END} + '; write it as ' + {END} + '-' + {START}"
        ),
    );
    json!([form, prefix, host_bits, families, order])
}

/// Schema of `IPAddressPool.spec.addresses`.
pub fn addresses_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Addresses the pool hands out: CIDRs (198.51.100.0/24, 2001:db8:1::/64), ranges \
                        (198.51.100.10-198.51.100.20) and single addresses, IPv4 and IPv6 mixed freely.",
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_ADDRESS_ENTRIES,
        "items": {
            "type": "string",
            "maxLength": MAX_ADDRESS_ENTRY_LEN,
            "x-kubernetes-validations": address_entry_rules(),
        },
    })
}

/// Schema of a list of DNS-1123 labels (namespace names).
pub fn namespace_names_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Namespaces whose Services the pool serves.",
        "type": "array",
        "maxItems": 256,
        "items": {
            "type": "string",
            "maxLength": 63,
            "x-kubernetes-validations": [{
                "rule": "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
                "messageExpression": "'\"' + self + '\" is not a namespace name (lowercase letters, digits and \"-\", starting and ending with a letter or digit)'",
            }],
        },
    })
}

/// Schema of a list of `IPAddressPool` names (DNS-1123 subdomains).
pub fn pool_names_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Names of the IPAddressPools this advertisement announces. With neither this nor \
                        ipAddressPoolSelectors set, every pool is announced.",
        "type": "array",
        "maxItems": 256,
        "items": {
            "type": "string",
            "maxLength": 253,
            "x-kubernetes-validations": [{
                "rule": "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",
                "messageExpression": "'\"' + self + '\" is not an IPAddressPool name (lowercase letters, digits, \"-\" and \".\")'",
            }],
        },
    })
}

/// Schema of a list of network interface names.
pub fn interface_names_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Interfaces to announce on. Empty means every suitable interface of the node \
                        (up, ARP-capable, not loopback, not a bond or bridge member, not excluded).",
        "type": "array",
        "maxItems": 64,
        "items": {
            "type": "string",
            "maxLength": 64,
            "x-kubernetes-validations": [{
                "rule": "size(self) >= 1 && size(self) <= 15 && !self.matches('[/\\\\s:]') && self != '.' && self != '..'",
                "messageExpression": "'\"' + self + '\" is not a Linux interface name (1 to 15 characters, no \"/\", \":\" or whitespace)'",
            }],
        },
    })
}

/// Rule of a label-selector requirement: `values` fits the operator.
pub fn selector_requirement_rules() -> Value {
    json!([{
        "rule": "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)",
        "messageExpression": "'operator ' + self.operator + ' on key \"' + self.key + '\" ' + (self.operator in ['In', 'NotIn'] ? 'needs at least one value' : 'takes no values')",
        "fieldPath": ".values",
    }])
}
