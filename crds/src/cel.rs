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
pub const MAX_ADDRESS_ENTRY_LEN: u64 = 100;
/// Most entries one pool may list.
pub const MAX_ADDRESS_ENTRIES: u64 = 128;

/// `s` (the trimmed entry) is `a-b` with both ends IP addresses.
const IS_RANGE: &str = "(s.split('-').size() == 2 && isIP(s.split('-')[0].trim()) && isIP(s.split('-')[1].trim()))";
/// `s` is `ip/digits` (a CIDR, perhaps with an out-of-range prefix).
const IS_CIDR_SHAPE: &str =
    "(s.split('/').size() == 2 && isIP(s.split('/')[0]) && s.split('/')[1].matches('^(0|[1-9][0-9]{0,2})$'))";

fn bind_entry(expr: &str) -> String {
    format!("cel.bind(s, self.trim(), {expr})")
}

fn bind_range_ends(expr: &str) -> String {
    bind_entry(&format!(
        "!{IS_RANGE} || cel.bind(a, s.split('-')[0].trim(), cel.bind(b, s.split('-')[1].trim(), {expr}))"
    ))
}

/// Fixed-width text of the address in CEL string `x`, ordered like the address itself.
fn expanded(x: &str) -> String {
    let v4 = format!("ip({x}).string().split('.').map(o, '00'.substring(size(o) - 1) + o).join('.')");
    // Canonical IPv6 text has at most one '::'; replace it with the missing zero groups, then pad
    // every group to four hex digits.
    let v6 = format!(
        "cel.bind(c, ip({x}).string(), cel.bind(h, c.split('::'), \
         (size(h) == 1 ? c : [h[0], '0:0:0:0:0:0:0:0'.substring(0, 2 * (8 \
           - (h[0] == '' ? 0 : size(h[0].split(':'))) \
           - (h[1] == '' ? 0 : size(h[1].split(':')))) - 1), h[1]].filter(p, p != '').join(':'))\
         .split(':').map(g, '000'.substring(size(g) - 1) + g).join(':')))"
    );
    format!("(ip({x}).family() == 4 ? {v4} : {v6})")
}

fn rule(rule: String, message_expression: String) -> Value {
    json!({ "rule": rule, "messageExpression": message_expression })
}

/// Rules for one `spec.addresses` entry, in the order the Rust parser checks them.
pub fn address_entry_rules() -> Value {
    let form = rule(
        bind_entry(&format!("isIP(s) || isCIDR(s) || {IS_RANGE} || {IS_CIDR_SHAPE}")),
        "self.trim().contains('-') \
           ? 'range \"' + self + '\" must be two IP addresses joined by \"-\"' \
           : '\"' + self + '\" is not an IP address, a CIDR (198.51.100.0/24) or a range (198.51.100.10-198.51.100.20)'"
            .into(),
    );
    let prefix = rule(
        bind_entry(&format!("!{IS_CIDR_SHAPE} || isCIDR(s)")),
        bind_entry(
            "cel.bind(f, ip(s.split('/')[0]).family(), 'prefix length /' + s.split('/')[1] + \
             ' is out of range for IPv' + string(f) + ' (0 to ' + (f == 4 ? '32' : '128') + ')')",
        ),
    );
    let host_bits = rule(
        bind_entry("!isCIDR(s) || cidr(s).masked().string() == cidr(s).string()"),
        bind_entry("'\"' + s + '\" has host bits set; the network address is ' + cidr(s).masked().string()"),
    );
    let families = rule(
        bind_range_ends("ip(a).family() == ip(b).family()"),
        message_for_range(
            "'range ' + ip(a).string() + '-' + ip(b).string() + ' mixes IPv4 and IPv6; use one range per family'",
        ),
    );
    let order = rule(
        bind_range_ends(&format!("ip(a).family() != ip(b).family() || {} <= {}", expanded("a"), expanded("b"))),
        message_for_range("'range start ' + ip(a).string() + ' is after its end ' + ip(b).string() + '; write it as ' + ip(b).string() + '-' + ip(a).string()"),
    );
    json!([form, prefix, host_bits, families, order])
}

/// A message expression over the range ends `a` and `b` of a range-shaped entry.
fn message_for_range(expr: &str) -> String {
    format!("cel.bind(s, self.trim(), cel.bind(a, s.split('-')[0].trim(), cel.bind(b, s.split('-')[1].trim(), {expr})))")
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
