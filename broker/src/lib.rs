//! The Runnel broker library.
pub mod groups;
