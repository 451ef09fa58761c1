//! Multi-process test helpers.
