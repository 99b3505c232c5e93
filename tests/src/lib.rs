//! Helpers for multi-process tests.
