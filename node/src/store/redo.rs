//! The record of one change a group commit made: what the write-ahead log holds, made by the
//! tables as they change and applied to them again after a crash.

/// One change a batch made, as it is logged and applied again after a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Redo {
    /// An event block applied with [`super::tables::Tables::apply_event`]; `holes` is whether
    /// the holes it leaves were recorded.
    Event {
        /// CID bytes.
        cid: Vec<u8>,
        /// Block bytes.
        data: Vec<u8>,
        /// The `note_holes` setting it was applied with.
        holes: bool,
    },
    /// A block stored with [`super::tables::Tables::put_block`].
    Block {
        /// CID bytes.
        cid: Vec<u8>,
        /// Block bytes.
        data: Vec<u8>,
    },
    /// A durable subscription record set (`Some`) or deleted (`None`).
    Durable {
        /// Record key.
        key: String,
        /// Its encoded value.
        value: Option<Vec<u8>>,
    },
}
