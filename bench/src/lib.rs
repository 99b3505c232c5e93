//! Shared benchmark code: the seeded events, the measurement harness, the systems under test,
//! and the report.

// Maintainers read these docs with private items (`cargo doc --document-private-items`, as
// scripts/test.sh builds them), where a link to a private item resolves and is worth having.
#![allow(rustdoc::private_intra_doc_links)]

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
pub mod timeline;
