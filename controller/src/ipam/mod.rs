//! Pure IP address management: no kube client, no I/O.
//!
//! ```text
//!  Service ──request::read_service──> Request ─┐
//!  IPAddressPool ──PoolConfig::from_object─────┼──> Allocator::assign ──> Outcome | Failure
//!  Namespace labels ───────────────────────────┘        (pool::Pool, free_space, held, sharing)
//! ```

pub mod allocator;
pub mod error;
pub mod free_space;
pub mod held;
pub mod pool;
pub mod request;
pub mod sharing;

#[cfg(test)]
mod tests;

pub use allocator::{Allocator, Assignment, Failure, Loss, Outcome, PoolCounts};
pub use error::AllocationError;
pub use free_space::FreeSpace;
pub use pool::{PoolConfig, RuledOut};
pub use request::{Handling, NotHandled, Request, RequestError, ServiceKey, read_service};
