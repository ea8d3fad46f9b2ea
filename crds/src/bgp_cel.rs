//! Schemas and CEL rules of the BGP objects' fields (`BGPPeer`, `BGPAdvertisement`,
//! `Community`, `BFDProfile`), each mirroring the Rust parser the speaker reads the field with,
//! so `kubectl apply` of a bad value fails at once with a message naming the field.

use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

/// Go duration syntax (`90s`, `1m30s`, `300ms`), what CEL's `duration()` accepts.
const DURATION_REGEX: &str = "^[+]?(([0-9]+([.][0-9]*)?|[.][0-9]+)(ns|us|µs|μs|ms|s|m|h))+$";

/// `d` (a CEL string expression) is a duration.
fn is_duration(d: &str) -> String {
    format!("({d} == '0' || {d}.matches('{DURATION_REGEX}'))")
}

/// `d` (a CEL string expression known to be a duration) as a CEL duration (`0` alone included).
fn duration_of(d: &str) -> String {
    format!("duration({d} == '0' ? '0s' : {d})")
}

fn duration_shape_rule() -> Value {
    json!({
        "rule": is_duration("self"),
        "messageExpression": "'\"' + self + '\" is not a duration like 90s, 1m30s or 300ms'",
    })
}

/// A duration field with extra rules (each `{rule, message}`), applied once the shape is right.
fn duration_schema(description: &str, rules: &[(&str, &str)]) -> Schema {
    let mut all = vec![duration_shape_rule()];
    all.extend(rules.iter().map(|(rule, message)| {
        json!({ "rule": format!("!{} || ({rule})", is_duration("self")), "message": message })
    }));
    json_schema!({
        "description": description,
        "type": "string",
        "maxLength": 64,
        "x-kubernetes-validations": all,
    })
}

/// `BGPPeer.spec.holdTime`.
pub fn hold_time_schema(_: &mut SchemaGenerator) -> Schema {
    duration_schema(
        "Hold time offered to the peer (RFC 4271): the session drops after this long without a \
         message. 0 disables keepalives; otherwise at least 3s. The session uses the smaller of \
         this and the peer's offer. Default 90s.",
        &[(
            "duration(self) == duration('0s') || (duration(self) >= duration('3s') && duration(self) <= duration('65535s'))",
            "hold time must be 0 (no keepalives) or from 3s to 65535s (RFC 4271)",
        )],
    )
}

/// `BGPPeer.spec.keepaliveTime`.
pub fn keepalive_time_schema(_: &mut SchemaGenerator) -> Schema {
    duration_schema(
        "Interval between KEEPALIVE messages; must be shorter than the hold time. Default: a third \
         of the negotiated hold time.",
        &[(
            "duration(self) <= duration('65535s')",
            "keepalive time must be at most 65535s",
        )],
    )
}

/// `BGPPeer.spec.connectTime`.
pub fn connect_time_schema(_: &mut SchemaGenerator) -> Schema {
    duration_schema(
        "Longest wait between attempts to connect to the peer (attempts back off from 1s up to \
         this). Whole seconds, 1s to 65535s. Default 30s.",
        &[
            (
                "duration(self) >= duration('1s') && duration(self) <= duration('65535s')",
                "connect time should be between 1 seconds to 65535",
            ),
            (
                "duration(self).getMilliseconds() % 1000 == 0",
                "connect time should contain a whole number of seconds",
            ),
        ],
    )
}

/// An autonomous system number (4 octets, RFC 6793; 0 is reserved by RFC 7607).
pub fn asn_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Autonomous system number, 1 to 4294967295 (4-octet ASNs, RFC 6793).",
        "type": "integer",
        "format": "int64",
        "minimum": 1,
        "maximum": 4294967295_u64,
    })
}

/// An IP address (either family), as written.
fn ip_schema(description: &str) -> Schema {
    json_schema!({
        "description": description,
        "type": "string",
        "maxLength": 45,
        "x-kubernetes-validations": [{
            "rule": "isIP(self)",
            "messageExpression": "'\"' + self + '\" is not an IP address'",
        }],
    })
}

/// `BGPPeer.spec.peerAddress`.
pub fn peer_address_schema(_: &mut SchemaGenerator) -> Schema {
    ip_schema("Address of the router to connect to (IPv4 or IPv6).")
}

/// `BGPPeer.spec.sourceAddress`.
pub fn source_address_schema(_: &mut SchemaGenerator) -> Schema {
    ip_schema(
        "Local address to connect from, of the same family as peerAddress; it must be on the \
         node. Default: the address the node's routing table picks.",
    )
}

/// `BGPPeer.spec.routerID`.
pub fn router_id_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "BGP identifier sent in OPEN, an IPv4 address. Default: the node's IPv4 \
                        address on the session (or a hash of the node's name on IPv6-only nodes).",
        "type": "string",
        "maxLength": 15,
        "x-kubernetes-validations": [{
            "rule": "isIP(self) && ip(self).family() == 4",
            "messageExpression": "'\"' + self + '\" is not an IPv4 address (a BGP identifier is 4 octets)'",
        }],
    })
}

/// `BGPPeer.spec.password`: a TCP MD5 key (RFC 2385); Linux takes at most 80 bytes.
pub fn password_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "TCP MD5 signature key (RFC 2385) the router expects, in clear text; prefer \
                        passwordSecret. At most 80 bytes (the kernel's limit).",
        "type": "string",
        "minLength": 1,
        "maxLength": 80,
    })
}

/// A reference by name to another object (a `BFDProfile`, a `BGPPeer`).
pub fn object_name_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Name of the object.",
        "type": "string",
        "maxLength": 253,
        "x-kubernetes-validations": [{
            "rule": "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",
            "messageExpression": "'\"' + self + '\" is not an object name (lowercase letters, digits, \"-\" and \".\")'",
        }],
    })
}

/// `BGPAdvertisement.spec.peers`.
pub fn peer_names_schema(generator: &mut SchemaGenerator) -> Schema {
    let item = object_name_schema(generator);
    json_schema!({
        "description": "Names of the BGPPeers to announce to. Empty: every peer.",
        "type": "array",
        "maxItems": 64,
        "items": item,
    })
}

const COMMUNITY_NAME: &str = "^[a-zA-Z0-9]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?$";
const STANDARD: &str = "self.matches('^[0-9]{1,5}:[0-9]{1,5}$') && int(self.split(':')[0]) <= 65535 && int(self.split(':')[1]) <= 65535";
const LARGE: &str = "self.matches('^large:[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$') && int(self.split(':')[1]) <= 4294967295 && int(self.split(':')[2]) <= 4294967295 && int(self.split(':')[3]) <= 4294967295";
const VALUE_MESSAGE: &str = "'\"' + self + '\" is not a community: write a standard one as two numbers up to 65535 joined by \":\" (65000:100) or a large one as large: and three numbers up to 4294967295 (large:65000:1:2)'";

/// `Community.spec.communities[].name`.
pub fn community_name_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Name of the value, used in BGPAdvertisement.spec.communities.",
        "type": "string",
        "maxLength": 63,
        "x-kubernetes-validations": [{
            "rule": format!("self.matches('{COMMUNITY_NAME}')"),
            "messageExpression": "'\"' + self + '\" is not a community name (letters, digits, \"-\", \"_\" and \".\"; no \":\")'",
        }],
    })
}

/// `Community.spec.communities[].value`.
pub fn community_value_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "A standard community (65000:100) or a large community (large:65000:1:2).",
        "type": "string",
        "maxLength": 40,
        "x-kubernetes-validations": [{
            "rule": format!("({STANDARD}) || ({LARGE})"),
            "messageExpression": VALUE_MESSAGE,
        }],
    })
}

/// `BGPAdvertisement.spec.communities`.
pub fn communities_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Communities attached to the announced routes: standard (65000:100), large \
                        (large:65000:1:2), or the name of a value in a Community object.",
        "type": "array",
        "maxItems": 64,
        "items": {
            "type": "string",
            "maxLength": 63,
            "x-kubernetes-validations": [{
                "rule": format!("self.contains(':') ? (({STANDARD}) || ({LARGE})) : self.matches('{COMMUNITY_NAME}')"),
                "messageExpression": format!("self.contains(':') ? {VALUE_MESSAGE} : '\"' + self + '\" is not a community name (letters, digits, \"-\", \"_\" and \".\")'"),
            }],
        },
    })
}

/// Rules across `BGPPeer.spec` fields.
pub fn peer_spec_rules() -> Value {
    let keepalive_rule = format!(
        "[has(self.holdTime) ? self.holdTime : '90s'].all(h, [has(self.keepaliveTime) ? self.keepaliveTime : '0s'].all(k, \
         !({hd} && {kd}) || ({h} == duration('0s') ? {k} == duration('0s') : {k} < {h})))",
        hd = is_duration("h"),
        kd = is_duration("k"),
        h = duration_of("h"),
        k = duration_of("k"),
    );
    json!([
        {
            "rule": "has(self.peerASN) != has(self.dynamicASN)",
            "message": "set exactly one of spec.peerASN (the router's AS number) and spec.dynamicASN (internal or external)",
        },
        {
            "rule": "!has(self.password) || !has(self.passwordSecret)",
            "message": "set at most one of spec.password and spec.passwordSecret",
        },
        {
            "rule": "!has(self.sourceAddress) || !isIP(self.sourceAddress) || !isIP(self.peerAddress) || ip(self.sourceAddress).family() == ip(self.peerAddress).family()",
            "message": "spec.sourceAddress must be of the same family (IPv4 or IPv6) as spec.peerAddress",
            "fieldPath": ".sourceAddress",
        },
        {
            "rule": keepalive_rule,
            "message": "spec.keepaliveTime must be shorter than spec.holdTime (90s when unset), and 0 or unset when the hold time is 0",
            "fieldPath": ".keepaliveTime",
        },
    ])
}
