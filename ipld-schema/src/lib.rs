//! tidings event blocks.
