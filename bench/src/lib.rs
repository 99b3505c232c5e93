//! Shared benchmark code: the seeded events, the measurement harness, the systems under test,
//! and the report.

pub mod figures;
pub mod harness;
pub mod headline;
pub mod machine;
pub mod orders;
pub mod peers;
pub mod plot;
pub mod procs;
pub mod proxy;
pub mod report;
pub mod stats;
pub mod subscribers;
