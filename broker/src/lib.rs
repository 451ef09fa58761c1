//! The Runnel broker library.
