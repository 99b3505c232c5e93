//! A CAR v1 reader fed chunk by chunk, for `dag/export` answers read as they stream in (a long
//! stream's export need never be held whole). It only frames sections: CIDs and bytes are
//! checked by whoever takes the blocks, exactly as blocks from peers are.

use tidings_ipld_schema::car::{MAX_CID_LEN, MAX_HEADER_SIZE};
use tidings_ipld_schema::{Cid, MAX_BLOCK_SIZE};

/// Reads sections out of the bytes pushed so far.
#[derive(Debug, Default)]
pub struct CarStream {
    buf: Vec<u8>,
    /// Where the unread bytes of `buf` start.
    at: usize,
    header_done: bool,
}

impl CarStream {
    /// Adds bytes read from the answer.
    pub fn push(&mut self, chunk: &[u8]) {
        // Drop what was read before growing, so the buffer holds about one section.
        if self.at > 0 && self.at * 2 >= self.buf.len() {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole section (CID, block bytes), `None` until more bytes are pushed, or why
    /// the bytes are not a CAR.
    pub fn next_block(&mut self) -> Result<Option<(Cid, Vec<u8>)>, String> {
        if !self.header_done {
            let Some((len, n)) = varint(&self.buf[self.at..])? else {
                return Ok(None);
            };
            if len == 0 || len > MAX_HEADER_SIZE as u64 {
                return Err(format!("header length {len} is impossible"));
            }
            let end = self.at + n + len as usize;
            if self.buf.len() < end {
                return Ok(None);
            }
            self.at = end;
            self.header_done = true;
        }
        let Some((len, n)) = varint(&self.buf[self.at..])? else {
            return Ok(None);
        };
        if len == 0 || len > (MAX_BLOCK_SIZE + MAX_CID_LEN) as u64 {
            return Err(format!(
                "section length {len} is impossible (a block is at most {MAX_BLOCK_SIZE} bytes)"
            ));
        }
        let start = self.at + n;
        let end = start + len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let mut section = &self.buf[start..end];
        let cid =
            Cid::read_bytes(&mut section).map_err(|e| format!("bad CID in a section: {e}"))?;
        let data = section.to_vec();
        self.at = end;
        Ok(Some((cid, data)))
    }

    /// At the end of the answer: an error if it stopped inside a section.
    pub fn finish(&self) -> Result<(), String> {
        if self.at < self.buf.len() {
            Err(format!(
                "the export ended inside a section ({} bytes left over)",
                self.buf.len() - self.at
            ))
        } else if !self.header_done {
            Err("the export ended before its header".into())
        } else {
            Ok(())
        }
    }
}

/// An unsigned LEB128 varint at the start of `b`: its value and length, `None` if incomplete.
fn varint(b: &[u8]) -> Result<Option<(u64, usize)>, String> {
    let mut v: u64 = 0;
    for (i, byte) in b.iter().enumerate() {
        if i >= 9 {
            return Err("a varint longer than 9 bytes".into());
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_ipld_schema::{DAG_CBOR, car, cid_of};

    fn sample(n: usize) -> (Vec<u8>, Vec<(Cid, Vec<u8>)>) {
        let blocks: Vec<(Cid, Vec<u8>)> = (0..n)
            .map(|i| {
                // A CBOR byte string of i*37 bytes: sizes across varint widths.
                let mut d = vec![0x5a];
                d.extend_from_slice(&((i * 37) as u32).to_be_bytes());
                d.extend(std::iter::repeat_n(i as u8, i * 37));
                (cid_of(DAG_CBOR, &d), d)
            })
            .collect();
        let mut out = Vec::new();
        car::write_car(&mut out, &[blocks[0].0], blocks.clone()).expect("car");
        (out, blocks)
    }

    #[test]
    fn sections_come_out_whole_whatever_the_chunking() {
        let (bytes, blocks) = sample(40);
        for chunk in [1, 2, 3, 7, 64, 1000, bytes.len()] {
            let mut s = CarStream::default();
            let mut got = Vec::new();
            for part in bytes.chunks(chunk) {
                s.push(part);
                while let Some(b) = s.next_block().expect("valid") {
                    got.push(b);
                }
            }
            s.finish().expect("ends cleanly");
            assert_eq!(got, blocks, "chunks of {chunk}");
        }
    }

    #[test]
    fn a_cut_or_damaged_export_is_an_error_not_a_block() {
        let (bytes, _) = sample(3);
        let mut s = CarStream::default();
        s.push(&bytes[..bytes.len() - 1]);
        while s.next_block().expect("valid so far").is_some() {}
        assert!(s.finish().is_err(), "cut inside the last section");

        let mut s = CarStream::default();
        s.push(&[0xff; 12]);
        assert!(s.next_block().is_err(), "a runaway varint");

        let mut s = CarStream::default();
        // header of 1 byte, then a section claiming 2 MiB
        s.push(&[1, 0xa0, 0x80, 0x80, 0x80, 0x01]);
        assert!(s.next_block().is_err(), "a section over the block limit");

        let s = CarStream::default();
        assert!(s.finish().is_err(), "nothing at all");
    }
}
