//! Every name ferrolb shares with its users and between its own components, defined once:
//! annotations, labels, condition types and reasons, Event reasons and actions, field managers.
//!
//! The controller, the speaker, the tests and the benches all name these constants; none spells
//! the strings again (`cargo xtask test` checks that with a grep, see `xtask/src/contract.rs`).
//! ferrolb sets no finalizers: deleting a Service or pool never waits for ferrolb.

/// Prefixes a literal with ferrolb's API group, so each annotation's name is written once.
macro_rules! ferrolb_io {
    ($name:literal) => {
        concat!("ferrolb.io/", $name)
    };
}

/// The API group of every ferrolb resource (and the prefix of its annotations and conditions).
pub const GROUP: &str = "ferrolb.io";

/// Annotations on Services and pools.
pub mod annotation {
    /// Prefixes accepted for every request annotation, ferrolb's own first. MetalLB's spellings
    /// are read too so that a migrating user changes nothing on their Services.
    pub const REQUEST_PREFIXES: [&str; 3] =
        [ferrolb_io!(""), "metallb.io/", "metallb.universe.tf/"];
    /// Request suffix: addresses asked for (comma list, at most one per family).
    pub const LOAD_BALANCER_IPS_SUFFIX: &str = "loadBalancerIPs";
    /// Request suffix: the pool asked for.
    pub const ADDRESS_POOL_SUFFIX: &str = "address-pool";
    /// Request suffix: the sharing key.
    pub const ALLOW_SHARED_IP_SUFFIX: &str = "allow-shared-ip";
    /// `ferrolb.io/loadBalancerIPs` on a Service.
    pub const LOAD_BALANCER_IPS: &str = ferrolb_io!("loadBalancerIPs");
    /// `ferrolb.io/address-pool` on a Service.
    pub const ADDRESS_POOL: &str = ferrolb_io!("address-pool");
    /// `ferrolb.io/allow-shared-ip` on a Service.
    pub const ALLOW_SHARED_IP: &str = ferrolb_io!("allow-shared-ip");
    /// Written by the controller on a Service: the pool its addresses come from.
    pub const ALLOCATED_FROM_POOL: &str = ferrolb_io!("ip-allocated-from-pool");
    /// On an `IPAddressPool`: the `spec.loadBalancerClass` of the Services it serves.
    pub const POOL_LOAD_BALANCER_CLASS: &str = ferrolb_io!("load-balancer-class");
}

/// Kubernetes' well-known labels ferrolb reads.
pub mod label {
    /// On a Node: no load balancer sends traffic to it (ferrolb does not announce from it).
    pub const EXCLUDE_FROM_EXTERNAL_LOAD_BALANCERS: &str =
        "node.kubernetes.io/exclude-from-external-load-balancers";
    /// On an EndpointSlice: the Service it belongs to.
    pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
}

/// Condition types ferrolb writes.
pub mod condition {
    /// On a Service, written by the controller: whether it holds its addresses.
    pub const IP_ALLOCATED: &str = ferrolb_io!("IPAllocated");
    /// On a Service, written by the speaker that owns it: whether (and from where) it is announced.
    pub const ANNOUNCED: &str = ferrolb_io!("Announced");
    /// On a pool: whether its addresses parse and overlap no other pool.
    pub const POOL_VALID: &str = "Valid";
    /// On a pool: whether every address is held.
    pub const POOL_EXHAUSTED: &str = "Exhausted";
}

/// Reasons of conditions and Events (CamelCase, as the API asks).
pub mod reason {
    /// Service condition: the addresses are held.
    pub const ALLOCATED: &str = "Allocated";
    /// Event: addresses were given to a Service.
    pub const IP_ALLOCATED: &str = "IPAllocated";
    /// Event: a Service's addresses were taken back.
    pub const IP_RELEASED: &str = "IPReleased";
    /// Event (Warning): a Service could not get its addresses.
    pub const ALLOCATION_FAILED: &str = "AllocationFailed";
    /// Allocation failure: the request itself is malformed.
    pub const INVALID_REQUEST: &str = "InvalidRequest";
    /// Allocation failure: no pool exists.
    pub const NO_POOL: &str = "NoPool";
    /// Allocation failure: the pool asked for does not exist.
    pub const POOL_NOT_FOUND: &str = "PoolNotFound";
    /// Allocation failure: an address asked for is in no pool.
    pub const NOT_IN_ANY_POOL: &str = "NotInAnyPool";
    /// Allocation failure: no pool serves the Service's namespace or labels.
    pub const NO_POOL_MATCHES: &str = "NoPoolMatches";
    /// Allocation failure: the matching pools have no free address.
    pub const POOL_EXHAUSTED: &str = "PoolExhausted";
    /// Allocation failure: the address asked for may not be handed out (network or broadcast).
    pub const INELIGIBLE_IP: &str = "IneligibleIP";
    /// Allocation failure: the address is held by a Service it may not be shared with.
    pub const IP_IN_USE: &str = "IPInUse";
    /// Allocation failure: a sharing Service uses the same port.
    pub const PORT_COLLISION: &str = "PortCollision";
    /// Pool condition: valid.
    pub const POOL_VALID: &str = "Valid";
    /// Pool condition: it overlaps another pool.
    pub const POOL_OVERLAP: &str = "Overlap";
    /// Pool condition: an address entry does not parse.
    pub const POOL_INVALID_ADDRESSES: &str = "InvalidAddresses";
    /// Pool condition: an annotation of the pool is malformed.
    pub const POOL_INVALID_ANNOTATION: &str = "InvalidAnnotation";
    /// Pool condition: every address is held.
    pub const POOL_NO_FREE_ADDRESS: &str = "NoFreeAddress";
    /// Pool condition: addresses are free.
    pub const POOL_ADDRESSES_FREE: &str = "AddressesFree";
    /// Announced condition and Event: a node answers for the Service's addresses.
    pub const ANNOUNCED: &str = "Announced";
    /// Announced condition (False): no node may answer.
    pub const NOT_ANNOUNCED: &str = "NotAnnounced";
    /// Announced condition (False): the owner has no interface in the addresses' subnet.
    pub const NO_INTERFACE: &str = "NoInterface";
    /// Event (Warning): a node's kernel answers ARP/NDP for a LoadBalancer IP itself.
    pub const KERNEL_ANSWERS_FOR_ADDRESS: &str = "KernelAnswersForAddress";
    /// Event: that kernel no longer answers.
    pub const KERNEL_NO_LONGER_ANSWERS: &str = "KernelNoLongerAnswers";
}

/// Event actions (what the reporter did).
pub mod action {
    /// The controller gave addresses (or failed to).
    pub const ALLOCATE: &str = "Allocate";
    /// The controller took addresses back.
    pub const RELEASE: &str = "Release";
    /// A speaker announced (or stopped announcing) a Service's addresses.
    pub const ANNOUNCE: &str = "Announce";
    /// A speaker checked its node's kernel.
    pub const CHECK_KERNEL: &str = "CheckKernel";
}

/// Server-side apply field managers, also the Events' `reportingController`.
pub mod field_manager {
    /// The controller: Service `status.loadBalancer`, the IPAllocated condition, pool status.
    pub const CONTROLLER: &str = "ferrolb-controller";
    /// The speakers: the Announced condition.
    pub const SPEAKER: &str = "ferrolb-speaker";
    /// Prefix of the manager a speaker writes its own entry of `BGPPeer.status.sessions` with
    /// (`ferrolb-speaker/<node>`): one manager per node, so each owns only its entry.
    pub const SPEAKER_NODE_PREFIX: &str = "ferrolb-speaker/";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ferrolb_names_carry_the_group() {
        let prefix = format!("{GROUP}/");
        assert_eq!(annotation::REQUEST_PREFIXES[0], prefix);
        for name in [
            annotation::LOAD_BALANCER_IPS,
            annotation::ADDRESS_POOL,
            annotation::ALLOW_SHARED_IP,
            annotation::ALLOCATED_FROM_POOL,
            annotation::POOL_LOAD_BALANCER_CLASS,
            condition::IP_ALLOCATED,
            condition::ANNOUNCED,
        ] {
            assert!(name.starts_with(&prefix), "{name}");
        }
    }

    #[test]
    fn request_annotations_are_prefix_and_suffix() {
        for (full, suffix) in [
            (
                annotation::LOAD_BALANCER_IPS,
                annotation::LOAD_BALANCER_IPS_SUFFIX,
            ),
            (annotation::ADDRESS_POOL, annotation::ADDRESS_POOL_SUFFIX),
            (
                annotation::ALLOW_SHARED_IP,
                annotation::ALLOW_SHARED_IP_SUFFIX,
            ),
        ] {
            assert_eq!(full, format!("{}{suffix}", annotation::REQUEST_PREFIXES[0]));
        }
    }
}
