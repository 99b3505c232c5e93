//! The store's write-ahead log: what makes a group commit durable without redb's fsync.
//!
//! redb's durable commit writes every B-tree page the batch touched (blocks are keyed by
//! random CIDs, so that is several KB per event) and fsyncs them. The writer instead appends
//! what the batch changed (its [`Redo`] records: event blocks, other blocks, durable records)
//! to this file, fdatasyncs that one sequential write, and commits the redb transaction without
//! an fsync. Every few seconds (or megabytes) it makes one durable redb commit and empties the
//! log: a checkpoint.
//!
//! A crash rolls redb back to its last durable commit; [`Wal::open`] then reads back every
//! whole record and the store applies them again. Applying is idempotent (a block already held
//! changes nothing; a durable record is set to its logged value), so a record that a later
//! durable commit already holds costs nothing. A record cut short by the crash fails its
//! checksum: its batch was never acknowledged, and the log ends before it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::WriteTransaction;
use sha2::{Digest, Sha256};
use tidings_ipld_schema::{Block, Cid, Event};

use super::redo::Redo;
use super::tables::{DURABLES, Tables};
use super::{StoreError, db};

/// A checkpoint is due once the log holds this much (about 750 small events)...
///
/// Small, because a checkpoint stalls the writer (and everything queued behind it) while it
/// writes out every page changed since the last one: at 5,000 events/s a log of 1 MB made a
/// checkpoint of about 5 ms twice a second. A checkpoint also costs an fsync of its own, so a
/// node writing 28,000 events/s makes about 35 a second. In 9 alternating runs of one node's
/// throughput it delivered a median 4% fewer events than with 32 MB, well inside the runs'
/// spread; making them at most every 200 or 500 ms instead gained nothing measurable.
pub(super) const CHECKPOINT_BYTES: u64 = 256 << 10;
/// ...or its oldest record is this old: a restart never has much to replay.
const CHECKPOINT_AGE: Duration = Duration::from_secs(2);
/// Bytes before a record's payload: its length (u32), epoch (u64) and the SHA-256 of epoch
/// and payload.
const HEADER: usize = 4 + 8 + 32;
/// A length above this is not a record: the tail is garbage.
const MAX_RECORD: u64 = 1 << 30;

const TAG_EVENT: u8 = 1;
const TAG_EVENT_HOLES: u8 = 2;
const TAG_BLOCK: u8 = 3;
const TAG_DURABLE_SET: u8 = 4;
const TAG_DURABLE_DEL: u8 = 5;

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Encodes a batch's records as one log payload.
#[cfg(test)]
fn encode(records: &[Redo]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, records);
    out
}

/// Appends a batch's records, encoded as one log payload, to `out`.
fn encode_into(out: &mut Vec<u8>, records: &[Redo]) {
    out.reserve(
        records
            .iter()
            .map(|r| match r {
                Redo::Event { cid, data, .. } | Redo::Block { cid, data } => {
                    9 + cid.len() + data.len()
                }
                Redo::Durable { key, value } => 9 + key.len() + value.as_ref().map_or(0, Vec::len),
            })
            .sum(),
    );
    for r in records {
        match r {
            Redo::Event { cid, data, holes } => {
                out.push(if *holes { TAG_EVENT_HOLES } else { TAG_EVENT });
                put(out, cid);
                put(out, data);
            }
            Redo::Block { cid, data } => {
                out.push(TAG_BLOCK);
                put(out, cid);
                put(out, data);
            }
            Redo::Durable { key, value } => match value {
                Some(v) => {
                    out.push(TAG_DURABLE_SET);
                    put(out, key.as_bytes());
                    put(out, v);
                }
                None => {
                    out.push(TAG_DURABLE_DEL);
                    put(out, key.as_bytes());
                }
            },
        }
    }
}

/// Decodes a payload [`encode_into`] made; `None` if it is not one (its checksum matched, so that
/// is a bug or a file written by something else).
pub(super) fn decode(mut bytes: &[u8]) -> Option<Vec<Redo>> {
    fn take<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let v = bytes.get(4..4 + len)?;
        *bytes = &bytes[4 + len..];
        Some(v)
    }
    let mut out = Vec::new();
    while let Some((&tag, rest)) = bytes.split_first() {
        bytes = rest;
        out.push(match tag {
            TAG_EVENT | TAG_EVENT_HOLES | TAG_BLOCK => {
                let cid = take(&mut bytes)?.to_vec();
                let data = take(&mut bytes)?.to_vec();
                match tag {
                    TAG_BLOCK => Redo::Block { cid, data },
                    _ => Redo::Event {
                        cid,
                        data,
                        holes: tag == TAG_EVENT_HOLES,
                    },
                }
            }
            TAG_DURABLE_SET | TAG_DURABLE_DEL => {
                let key = String::from_utf8(take(&mut bytes)?.to_vec()).ok()?;
                let value = match tag {
                    TAG_DURABLE_SET => Some(take(&mut bytes)?.to_vec()),
                    _ => None,
                };
                Redo::Durable { key, value }
            }
            _ => return None,
        });
    }
    Some(out)
}

/// Applies one logged change again (after a crash, to a store rolled back to its last durable
/// commit). Idempotent, like the change itself.
pub(super) fn apply(
    txn: &WriteTransaction,
    t: &mut Tables<'_>,
    r: &Redo,
) -> Result<(), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("write-ahead log: {what}"));
    match r {
        Redo::Event { cid, data, holes } => {
            let cid = Cid::try_from(cid.as_slice()).map_err(|_| corrupt("bad CID"))?;
            let event = Event::decode_stored(data).ok_or_else(|| corrupt("bad event block"))?;
            t.set_note_holes(*holes);
            t.apply_event(
                &Block {
                    cid,
                    data: data.clone(),
                },
                &event,
            )?;
        }
        Redo::Block { cid, data } => {
            let cid = Cid::try_from(cid.as_slice()).map_err(|_| corrupt("bad CID"))?;
            t.put_block(&Block {
                cid,
                data: data.clone(),
            })?;
        }
        Redo::Durable { key, value } => {
            let mut table = txn.open_table(DURABLES).map_err(db)?;
            match value {
                Some(v) => table.insert(key.as_str(), v.as_slice()).map_err(db)?,
                None => table.remove(key.as_str()).map_err(db)?,
            };
        }
    }
    Ok(())
}

/// The log file next to the store at `store`.
pub(super) fn path_for(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".wal");
    PathBuf::from(name)
}

/// The open log.
///
/// The file is reused, not truncated: each checkpoint starts a new epoch at offset 0, and a
/// record counts only if it carries the epoch of the first one. Overwriting blocks the file
/// already has, and reserving blocks ahead of the end before they are needed, spares most
/// appends' fdatasync a file-size change (an ext4 journal commit).
#[derive(Debug)]
pub(super) struct Wal {
    file: File,
    /// Where the next record goes: the bytes of whole records of this epoch.
    len: u64,
    /// Bytes of the file that exist on disk (zeros or old records) ahead of `len`.
    allocated: u64,
    /// This epoch: never the same twice for one file.
    epoch: u64,
    /// When the first record since the last checkpoint was appended.
    oldest: Option<Instant>,
}

/// Reserved ahead of the end in steps of this much.
const GROW: u64 = 4 << 20;

/// Reserves `len` bytes of `file` from `at` (reading as zeros), extending it; whether it could.
#[cfg(target_os = "linux")]
fn reserve(file: &File, at: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    let (Ok(at), Ok(len)) = (libc::off_t::try_from(at), libc::off_t::try_from(len)) else {
        return false;
    };
    // SAFETY: a valid open descriptor; fallocate touches no memory of ours.
    unsafe { libc::fallocate(file.as_raw_fd(), 0, at, len) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn reserve(_file: &File, _at: u64, _len: u64) -> bool {
    false
}

/// A new epoch, after `prev`: the clock in ns, so a restart does not meet an old one.
fn next_epoch(prev: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    now.max(prev.wrapping_add(1))
}

fn digest(epoch: u64, payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(epoch.to_le_bytes());
    h.update(payload);
    h.finalize().into()
}

impl Wal {
    /// Opens (or creates) the log at `path` and returns it with the batches of every whole
    /// record it holds, oldest first. A record cut short, failing its checksum or of another
    /// epoch ends the log.
    pub(super) fn open(path: &Path) -> std::io::Result<(Wal, Vec<Vec<Redo>>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // Record by record: after a clean stop the first header is zeroed, and nothing past
        // it is read.
        let size = file.metadata()?.len();
        let mut reader = std::io::BufReader::new(&mut file);
        let mut batches = Vec::new();
        let mut at = 0u64;
        let mut epoch = None;
        let mut header = [0u8; HEADER];
        while at + HEADER as u64 <= size && reader.read_exact(&mut header).is_ok() {
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
            let mut e = [0u8; 8];
            e.copy_from_slice(&header[4..12]);
            let e = u64::from_le_bytes(e);
            let whole = at + HEADER as u64 + len;
            if len > MAX_RECORD || whole > size || epoch.is_some_and(|first| first != e) {
                break;
            }
            let mut payload = vec![0u8; len as usize];
            if reader.read_exact(&mut payload).is_err() || digest(e, &payload) != header[12..] {
                break;
            }
            let Some(records) = decode(&payload) else {
                break;
            };
            epoch = Some(e);
            batches.push(records);
            at = whole;
        }
        let wal = Wal {
            file,
            len: at,
            allocated: size,
            epoch: epoch.unwrap_or_else(|| next_epoch(0)),
            oldest: (at > 0).then(Instant::now),
        };
        Ok((wal, batches))
    }

    /// Appends one batch's records and waits until they are on disk.
    pub(super) fn append(&mut self, records: &[Redo]) -> std::io::Result<()> {
        // The payload is encoded in place after room for its header, which is filled after.
        let mut buf = vec![0u8; HEADER];
        encode_into(&mut buf, records);
        let len = (buf.len() - HEADER) as u32;
        let sum = digest(self.epoch, &buf[HEADER..]);
        buf[..4].copy_from_slice(&len.to_le_bytes());
        buf[4..12].copy_from_slice(&self.epoch.to_le_bytes());
        buf[12..HEADER].copy_from_slice(&sum);
        let end = self.len + buf.len() as u64;
        if end > self.allocated {
            self.grow(end)?;
        }
        // A record that reached the file only in part fails its checksum when read back, and
        // the next one overwrites it: `len` moves only once the record is on disk.
        self.file.seek(SeekFrom::Start(self.len))?;
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.len = end;
        self.oldest.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Extends the file past `end`, so appends up to there change no file size. Reserving the
    /// blocks (fallocate) writes nothing; where that is not supported, zeros are written.
    fn grow(&mut self, end: u64) -> std::io::Result<()> {
        let to = end.div_ceil(GROW) * GROW;
        if !reserve(&self.file, self.allocated, to - self.allocated) {
            self.file.seek(SeekFrom::Start(self.allocated))?;
            self.file
                .write_all(&vec![0u8; (to - self.allocated) as usize])?;
        }
        self.allocated = to;
        Ok(())
    }

    /// Whether the next commit should be a durable one that empties the log.
    pub(super) fn checkpoint_due(&self) -> bool {
        self.len >= CHECKPOINT_BYTES || self.oldest.is_some_and(|t| t.elapsed() >= CHECKPOINT_AGE)
    }

    /// Whether the log holds any record.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Empties the log: call only after a durable commit that holds everything in it. A new
    /// epoch begins at offset 0, and the first header is zeroed so the old records are not
    /// read back (they would only be applied again, which changes nothing).
    pub(super) fn reset(&mut self) -> std::io::Result<()> {
        self.epoch = next_epoch(self.epoch);
        self.oldest = None;
        if self.len == 0 && self.allocated < HEADER as u64 {
            return Ok(());
        }
        self.len = 0;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&[0u8; HEADER])?;
        self.file.sync_data()?;
        self.allocated = self.allocated.max(HEADER as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Redo> {
        vec![
            Redo::Event {
                cid: vec![1, 2, 3],
                data: vec![9; 300],
                holes: true,
            },
            Redo::Event {
                cid: vec![4],
                data: vec![],
                holes: false,
            },
            Redo::Block {
                cid: vec![5, 6],
                data: vec![7; 10],
            },
            Redo::Durable {
                key: "sub/a".into(),
                value: Some(vec![1, 2]),
            },
            Redo::Durable {
                key: "sub/b".into(),
                value: None,
            },
        ]
    }

    #[test]
    fn records_round_trip() {
        let r = sample();
        assert_eq!(decode(&encode(&r)), Some(r));
        assert_eq!(decode(&[]), Some(vec![]));
        assert_eq!(decode(&[TAG_BLOCK, 9, 0, 0, 0, 1]), None);
        assert_eq!(decode(&[77]), None);
    }

    /// Overwrites `bytes` at `at` in the file, as a crash in the middle of a write leaves it.
    fn scribble(path: &Path, at: u64, bytes: &[u8]) {
        let mut f = OpenOptions::new().write(true).open(path).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(bytes).unwrap();
    }

    fn size(r: &[Redo]) -> u64 {
        (HEADER + encode(r).len()) as u64
    }

    #[test]
    fn reopen_returns_whole_records_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let (mut wal, got) = Wal::open(&path).unwrap();
        assert!(got.is_empty() && wal.is_empty());
        let a = sample();
        let b = vec![Redo::Block {
            cid: vec![8],
            data: vec![8; 40],
        }];
        wal.append(&a).unwrap();
        wal.append(&b).unwrap();
        // Reserved ahead: appends do not change the file's size.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), GROW);
        let epoch = wal.epoch;
        drop(wal);

        // A crash in the middle of a third append: its length, epoch and part of the rest.
        let mut torn = (200u32).to_le_bytes().to_vec();
        torn.extend_from_slice(&epoch.to_le_bytes());
        torn.extend_from_slice(&[1, 2, 3]);
        scribble(&path, size(&a) + size(&b), &torn);
        let (mut wal, got) = Wal::open(&path).unwrap();
        assert_eq!(got, vec![a.clone(), b.clone()]);
        // The next append goes where the torn record began, so it is read back too.
        wal.append(&b).unwrap();
        drop(wal);
        let (mut wal, got) = Wal::open(&path).unwrap();
        assert_eq!(got, vec![a.clone(), b.clone(), b.clone()]);

        // After a checkpoint nothing is read back, though the old records are still there...
        wal.reset().unwrap();
        drop(wal);
        let (mut wal, got) = Wal::open(&path).unwrap();
        assert!(got.is_empty() && wal.is_empty());
        // ...and a new epoch's records end where its own end, not in the old ones after them.
        wal.append(&b).unwrap();
        drop(wal);
        let (mut wal, got) = Wal::open(&path).unwrap();
        assert_eq!(got, vec![b.clone()]);

        // A flipped byte inside a record ends the log there.
        wal.append(&a).unwrap();
        drop(wal);
        let at = size(&b) + size(&a) - 1;
        let mut f = OpenOptions::new().read(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        let mut byte = [0u8];
        f.read_exact(&mut byte).unwrap();
        scribble(&path, at, &[byte[0] ^ 1]);
        let (_, got) = Wal::open(&path).unwrap();
        assert_eq!(got, vec![b]);
    }

    #[test]
    fn checkpoint_is_due_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(&dir.path().join("s.wal")).unwrap();
        assert!(!wal.checkpoint_due());
        wal.append(&sample()).unwrap();
        assert!(!wal.checkpoint_due());
        wal.oldest = Some(Instant::now() - CHECKPOINT_AGE);
        assert!(wal.checkpoint_due());
        wal.reset().unwrap();
        assert!(!wal.checkpoint_due() && wal.is_empty());
    }
}
