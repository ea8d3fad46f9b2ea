//! ferrolb's API (group `ferrolb.io`, version `v1beta1`) and the pure logic that reads it.
//!
//! ```text
//!  IPAddressPool.spec.addresses ──address::parse_entry──> AddressRange (u128 bounds, any size)
//!  *.selectors ──────────────────selector::LabelSelector::matches──> bool
//!  types ──schemars + cel rules──> crd::all() ──> charts/ferrolb/charts/crds/templates/*.yaml
//!  contract: every annotation, label, condition, reason and field manager; ServiceKey
//! ```
//!
//! Nothing here talks to a cluster: the controller and speaker feed these functions values.
#![forbid(unsafe_code)]

pub mod address;
pub mod cel;
pub mod conditions;
pub mod contract;
pub mod count;
pub mod crd;
pub mod l2advertisement;
pub mod pool;
pub mod selector;
pub mod service_key;

pub use address::{AddressError, AddressListError, AddressRange, Family};
pub use conditions::service_condition;
pub use contract::GROUP;
pub use count::AddressCount;
pub use l2advertisement::{L2Advertisement, L2AdvertisementSpec};
pub use pool::{IPAddressPool, IPAddressPoolSpec, IPAddressPoolStatus, ServiceAllocation};
pub use selector::{LabelSelector, LabelSelectorRequirement, SelectorOperator};
pub use service_key::ServiceKey;
