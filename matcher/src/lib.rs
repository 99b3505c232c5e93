//! tidings filter language and matchers.
