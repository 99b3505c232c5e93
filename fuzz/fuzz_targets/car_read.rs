//! The CAR v1 reader, and what `POST /v1/car` does with each block it yields (events verified,
//! anything else hash-checked). Checks, beyond "never panics": every block read matches its CID,
//! and writing what was read gives a file that reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings_ipld_schema::car::{read_car, write_car};
use tidings_ipld_schema::{Block, DAG_CBOR, Event, MAX_BLOCK_SIZE, verify};

fuzz_target!(|data: &[u8]| {
    let Ok(car) = read_car(data) else {
        return;
    };
    for (cid, block) in &car.blocks {
        assert!(block.len() <= MAX_BLOCK_SIZE);
        Block::check(cid, block).expect("read_car yields only blocks that match their CID");
        if cid.codec() == DAG_CBOR && Event::decode(block).is_ok() {
            let _ = verify(cid, block);
        }
    }
    let mut out = Vec::new();
    write_car(&mut out, &car.roots, car.blocks.iter().cloned()).expect("what was read is writable");
    assert_eq!(read_car(&out).expect("what was written reads back"), car);
});
