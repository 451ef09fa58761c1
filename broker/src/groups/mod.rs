//! Consumer groups: broker-side membership and assignment (KIP-848 style) and committed offsets.
pub mod assignor;
pub mod coordinator;
pub mod group;
