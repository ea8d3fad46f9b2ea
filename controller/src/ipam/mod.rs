//! Pure IP address management: no kube client, no I/O. Builds up to the allocator of issue #3;
//! today it holds the free-space index every pool's allocations go through.

pub mod free_space;

pub use free_space::FreeSpace;
