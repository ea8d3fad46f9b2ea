//! ferrolb's API (group `ferrolb.io`, version `v1beta1`) and the pure logic that reads it.
//!
//! ```text
//!  IPAddressPool.spec.addresses ──address::parse_entry──> AddressRange (u128 bounds, any size)
//!  *.selectors ──────────────────selector::LabelSelector::matches──> bool
//!  types ──schemars + cel rules──> crd::all() ──> charts/ferrolb/charts/crds/templates/*.yaml
//!                                            └──> reference::markdown() ──> docs/reference.md
//!  BGPPeer, BGPAdvertisement, Community, BFDProfile: the BGP objects; community::parse_*,
//!  duration::parse_go_duration read their values as the apiserver's CEL rules check them
//!  contract: every annotation, label, condition, reason and field manager; ServiceKey
//! ```
//!
//! Nothing here talks to a cluster: the controller and speaker feed these functions values.
#![forbid(unsafe_code)]

pub mod address;
pub mod bfd_profile;
pub mod bgp_advertisement;
pub mod bgp_cel;
pub mod bgp_peer;
pub mod cel;
pub mod community;
pub mod conditions;
pub mod contract;
pub mod count;
pub mod crd;
pub mod duration;
pub mod l2advertisement;
pub mod membership_view;
pub mod pool;
pub mod reference;
pub mod selector;
pub mod service_key;

pub use address::{AddressError, AddressListError, AddressRange, Family};
pub use bfd_profile::{BFDProfile, BFDProfileSpec};
pub use bgp_advertisement::{BGPAdvertisement, BGPAdvertisementSpec};
pub use bgp_peer::{BGPPeer, BGPPeerSpec, BGPPeerStatus, BGPSessionStatus, DynamicAsn};
pub use community::{Community, CommunityAlias, CommunitySpec, CommunityValue};
pub use conditions::{ingress_ips, service_condition};
pub use contract::GROUP;
pub use count::AddressCount;
pub use l2advertisement::{L2Advertisement, L2AdvertisementSpec};
pub use pool::{IPAddressPool, IPAddressPoolSpec, IPAddressPoolStatus, ServiceAllocation};
pub use selector::{LabelSelector, LabelSelectorRequirement, SelectorOperator};
pub use service_key::ServiceKey;
