//! Store tests on a real redb file in a temp dir.

use super::*;
use tidings_ipld_schema::{Ipld, Keypair};

fn sign(kp: &Keypair, topic: &str, seq: u64, prev: Vec<Cid>, n: i128) -> (Event, Block) {
    let body = Ipld::Map([("n".to_string(), Ipld::Integer(n))].into_iter().collect());
    let e = Event::sign(kp, topic, body, seq, 1_763_700_000_000 + seq, prev).unwrap();
    let b = e.to_block().unwrap();
    (e, b)
}

fn append(store: &Store, kp: &Keypair, topic: &str, n: i128) -> Appended {
    let author = kp.public().encode_protobuf();
    store
        .append_local(&author, topic, |seq, prev| {
            let e = Event::sign(kp, topic, Ipld::Integer(n), seq, 1, prev)?;
            let b = e.to_block()?;
            Ok((e, b))
        })
        .unwrap()
}

/// The CIDs of `root`'s arrival log, in order.
fn logged(store: &Store, root: &str) -> Vec<Cid> {
    store
        .log_range(root, 0, 1_000)
        .unwrap()
        .into_iter()
        .map(|(_, c)| c)
        .collect()
}

#[test]
fn append_chains_seq_prev_and_heads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    let kp = Keypair::generate_ed25519();
    let a = append(&store, &kp, "/t/x", 1);
    let b = append(&store, &kp, "/t/x", 2);
    assert_eq!(a.event.seq, 1);
    assert!(a.event.prev.is_empty());
    assert_eq!(b.event.seq, 2);
    assert_eq!(b.event.prev, vec![a.cid]);
    assert_eq!(store.heads("/t/x").unwrap(), vec![b.cid]);
    let author = kp.public().encode_protobuf();
    assert_eq!(store.last_seq(&author, "/t/x").unwrap(), Some((2, b.cid)));
    assert_eq!(store.stats().unwrap().blocks, 2);
    assert_eq!(store.roots().unwrap(), vec!["t".to_string()]);
    assert_eq!(logged(&store, "t"), vec![a.cid, b.cid]);
}

#[test]
fn two_writers_merge_heads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    let (k1, k2) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let a = append(&store, &k1, "/doc/1", 1);
    let b = append(&store, &k2, "/doc/1", 2);
    // k2's first event links k1's head, so the stream has one head again.
    assert_eq!(b.event.seq, 1);
    assert_eq!(b.event.prev, vec![a.cid]);
    assert_eq!(store.heads("/doc/1").unwrap(), vec![b.cid]);
    let c = append(&store, &k1, "/doc/1", 3);
    assert_eq!(c.event.seq, 2);
    assert_eq!(
        c.event.prev,
        vec![a.cid, b.cid],
        "own previous first, then other heads"
    );
}

#[test]
fn insert_out_of_order_keeps_heads_right() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    let kp = Keypair::generate_ed25519();
    let (e1, b1) = sign(&kp, "/o/t", 1, vec![], 1);
    let (e2, b2) = sign(&kp, "/o/t", 2, vec![b1.cid], 2);
    let (e3, b3) = sign(&kp, "/o/t", 3, vec![b2.cid], 3);
    // Child before parents: the parents must not become heads.
    store.insert_events(&[(b3.clone(), e3)], &[]).unwrap();
    store
        .insert_events(&[(b1.clone(), e1), (b2.clone(), e2.clone())], &[])
        .unwrap();
    assert_eq!(store.heads("/o/t").unwrap(), vec![b3.cid]);
    let author = kp.public().encode_protobuf();
    assert_eq!(store.last_seq(&author, "/o/t").unwrap(), Some((3, b3.cid)));
    // Inserting again changes nothing.
    let again = store.insert_events(&[(b2, e2)], &[]).unwrap();
    assert_eq!(
        again,
        InsertSummary {
            new_blocks: 0,
            already_had: 1
        }
    );
    assert_eq!(store.stats().unwrap().blocks, 3);
}

#[test]
fn reopen_keeps_everything_and_a_second_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let kp = Keypair::generate_ed25519();
    let last = {
        let store = Store::open(&path).unwrap();
        for i in 0..5 {
            append(&store, &kp, "/r/t", i);
        }
        let last = append(&store, &kp, "/r/t", 9);
        assert!(matches!(Store::open(&path), Err(StoreError::InUse(_))));
        last
    };
    let store = Store::open(&path).unwrap();
    assert_eq!(store.heads("/r/t").unwrap(), vec![last.cid]);
    assert_eq!(
        store.get_block(&last.cid).unwrap(),
        Some(last.event.encode().unwrap())
    );
    let next = append(&store, &kp, "/r/t", 10);
    assert_eq!(next.event.seq, 7);
}

#[test]
fn car_round_trip_and_all_or_nothing_import() {
    let dir = tempfile::tempdir().unwrap();
    let src = Store::open(&dir.path().join("a.redb")).unwrap();
    let kp = Keypair::generate_ed25519();
    for i in 0..10 {
        append(&src, &kp, "/c/t", i);
    }
    let car_bytes = src.export_car("/c/t").unwrap();
    let dst = Store::open(&dir.path().join("b.redb")).unwrap();
    let s = dst.import_car(&car_bytes).unwrap();
    assert_eq!((s.blocks, s.events, s.new_blocks), (10, 10, 10));
    assert_eq!(dst.heads("/c/t").unwrap(), src.heads("/c/t").unwrap());

    // A forged event (valid hash, wrong signature) poisons the whole file.
    let (mut forged, _) = sign(&kp, "/c/other", 1, vec![], 1);
    forged.sig[0] ^= 1;
    let fb = forged.to_block().unwrap();
    let parsed = tidings_ipld_schema::car::read_car(&car_bytes).unwrap();
    let mut blocks = parsed.blocks.clone();
    blocks.push((fb.cid, fb.data));
    let mut bad = Vec::new();
    tidings_ipld_schema::car::write_car(&mut bad, &parsed.roots, blocks).unwrap();
    let fresh = Store::open(&dir.path().join("c.redb")).unwrap();
    assert!(matches!(
        fresh.import_car(&bad),
        Err(ImportError::Invalid(_))
    ));
    assert_eq!(fresh.stats().unwrap(), StoreStats::default());
}

#[test]
fn retention_drops_old_log_entries_and_blocks_but_keeps_heads_own_events_and_pins() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    let other = Keypair::generate_ed25519();
    let me = Keypair::generate_ed25519();
    let my_key = me.public().encode_protobuf();
    // Ten events of another author (time = base + seq), then three of our own.
    let mut prev = vec![];
    let mut theirs = Vec::new();
    for seq in 1..=10 {
        let (e, b) = sign(&other, "/r/x", seq, prev, seq as i128);
        prev = vec![b.cid];
        store.insert_events(&[(b.clone(), e)], &[]).unwrap();
        theirs.push(b.cid);
    }
    let mine: Vec<Cid> = (0..3).map(|n| append(&store, &me, "/r/y", n).cid).collect();
    let before = store.stats().unwrap();
    let now = 1_763_700_000_000 + 10;
    let limits = |pin_from| Limits {
        max_age_ms: Some(5), // older than seq 5 goes
        max_bytes: None,
        now_ms: now,
        pin_from,
        own_author: &my_key,
    };
    // Pinned at position 2 (a durable's backlog starts there): only entries 0 and 1 go.
    let r = store.retain("r", limits(Some(2))).unwrap();
    assert_eq!(r.entries, 2);
    assert_eq!(store.log_range("r", 0, 100).unwrap()[0].0, 2);
    let r2 = store.retain("r", limits(None)).unwrap();
    // seq 3 and 4 go too (age 7 and 6 > 5); seq 5 (age 5) stays, and our own events (time 1)
    // are old but come after it in the log, where the pass stops.
    assert_eq!(r.entries + r2.entries, 4);
    assert_eq!(r.blocks + r2.blocks, 4);
    for c in &theirs[..4] {
        assert!(!store.has_block(c).unwrap(), "{c} should be gone");
    }
    for c in theirs[4..].iter().chain(&mine) {
        assert!(store.has_block(c).unwrap(), "{c} should stay");
    }
    let after = store.stats().unwrap();
    assert_eq!(after.blocks, before.blocks - 4);
    assert!(after.bytes < before.bytes);
    // A byte limit of 0 empties the log, but heads and own events keep their blocks.
    let r3 = store
        .retain(
            "r",
            Limits {
                max_age_ms: None,
                max_bytes: Some(0),
                ..limits(None)
            },
        )
        .unwrap();
    assert_eq!(r3.entries, 9);
    assert!(store.log_range("r", 0, 100).unwrap().is_empty());
    assert!(
        store.has_block(&theirs[9]).unwrap(),
        "a head keeps its block"
    );
    for c in &mine {
        assert!(store.has_block(c).unwrap(), "own events keep their blocks");
    }
    assert!(!store.has_block(&theirs[5]).unwrap());
}

#[test]
fn retention_records_each_stream_s_pruned_past_and_no_hole_is_recorded_or_listed_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = Store::open(&path).unwrap();
    let kp = Keypair::generate_ed25519();
    let author = kp.public().encode_protobuf();
    let c = chain(&kp, "/p/x", 10);
    store.insert_replicas(&c, &[]).unwrap();
    assert_eq!(store.pruned(&author, "/p/x").unwrap(), 0);
    // A byte limit of 0: every entry leaves the log; seq 1..=9 lose their blocks, the head
    // keeps its own, so the pruned past ends at 9.
    let r = retain_everything(&store, "p");
    assert_eq!((r.entries, r.blocks), (10, 9));
    assert_eq!(store.pruned(&author, "/p/x").unwrap(), 9);
    let tips = store.stream_tips("p").unwrap();
    assert_eq!((tips[0].seq, tips[0].pruned), (10, 9));
    // It survives a restart.
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.pruned(&author, "/p/x").unwrap(), 9);

    // Another store that learns the set's pruned past (replica sync) records no hole under
    // the head it takes, and only raises what it holds.
    let other = Store::open(&dir.path().join("o.redb")).unwrap();
    let d = chain(&kp, "/p/y", 8);
    assert_eq!(
        other
            .note_pruned(&[(author.clone(), "/p/x".into(), 9)])
            .unwrap(),
        1
    );
    assert_eq!(
        other
            .note_pruned(&[(author.clone(), "/p/x".into(), 4)])
            .unwrap(),
        0
    );
    assert_eq!(other.pruned(&author, "/p/x").unwrap(), 9);
    other.insert_replicas(&c[9..], &[]).unwrap();
    assert!(other.holes(10, |_, _| true).unwrap().is_empty());
    // A hole recorded before the pruned past was known is listed with it (replica sync drops
    // it unfetched), and one partly above it still records the part above.
    other.insert_replicas(&d[7..], &[]).unwrap();
    other
        .note_pruned(&[(author.clone(), "/p/y".into(), 5)])
        .unwrap();
    let holes = other.holes(10, |_, _| true).unwrap();
    assert_eq!(holes.len(), 1);
    assert_eq!((holes[0].seq, holes[0].pruned), (8, 5));
    other.insert_replicas(&d[6..7], &[]).unwrap();
    let holes = other.holes(10, |_, _| true).unwrap();
    assert_eq!((holes[0].seq, holes[0].missing), (7, d[5].0.cid));
    // The event just above the pruned past leaves no hole.
    other.insert_replicas(&d[5..6], &[]).unwrap();
    assert!(other.holes(10, |_, _| true).unwrap().is_empty());
}

#[test]
fn a_parent_retention_deleted_stays_out_of_the_heads_when_it_arrives_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    let kp = Keypair::generate_ed25519();
    let c = chain(&kp, "/r/x", 6);
    // In order, one event at a time: each parent is stored when its child arrives.
    for e in &c {
        store.insert_replicas(std::slice::from_ref(e), &[]).unwrap();
    }
    assert_eq!(store.heads("/r/x").unwrap(), vec![c[5].0.cid]);
    let r = retain_everything(&store, "r");
    assert_eq!(r.blocks, 5, "every block but the head's");
    assert!(
        store.has_block(&c[5].0.cid).unwrap(),
        "the head keeps its block"
    );
    // Fetched again (oldest first, then the rest in one batch): still one head.
    store.insert_replicas(&c[0..1], &[]).unwrap();
    assert_eq!(store.heads("/r/x").unwrap(), vec![c[5].0.cid]);
    store.insert_replicas(&c[1..5], &[]).unwrap();
    assert_eq!(store.heads("/r/x").unwrap(), vec![c[5].0.cid]);
    // And a second pass still finds the head and keeps it.
    let r = retain_everything(&store, "r");
    assert!(store.has_block(&c[5].0.cid).unwrap());
    assert_eq!(store.heads("/r/x").unwrap(), vec![c[5].0.cid], "{r:?}");
}

#[test]
fn a_reader_that_began_before_retention_still_reads_the_blocks_it_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    let kp = Keypair::generate_ed25519();
    let c = chain(&kp, "/r/x", 6);
    store.insert_replicas(&c, &[]).unwrap();
    let before = store.db.begin_read().unwrap();
    assert_eq!(retain_everything(&store, "r").blocks, 5);
    assert!(
        !store.has_block(&c[0].0.cid).unwrap(),
        "gone for a new reader"
    );
    // Later commits (they apply what retention retired) do not take it from that reader.
    let later = chain(&kp, "/r/y", 1);
    store.insert_replicas(&later, &[]).unwrap();
    // A long walk of history keeps reading the snapshot it began with.
    let old = store.db.block_reader(&before).unwrap();
    for (b, _) in &c {
        let held = old.get(&b.cid.to_bytes()).unwrap();
        assert_eq!(held.map(|g| g.value().to_vec()), Some(b.data.clone()));
    }
}

#[test]
fn a_store_that_kept_blocks_by_cid_moves_to_the_arrival_layout_with_nothing_lost() {
    use block_index::{BLOCK_CIDS, BLOCK_DATA};
    use redb::{ReadableDatabase, ReadableTable};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let kp = Keypair::generate_ed25519();
    let c = chain(&kp, "/m/x", 7);
    let loose = Block::new_dag_cbor(b"\x65loose".to_vec()).unwrap();
    Store::open(&path)
        .unwrap()
        .insert_replicas(&c, std::slice::from_ref(&loose))
        .unwrap();
    // Back to the layout of earlier versions: one table of blocks by CID.
    {
        let database = Database::create(&path).unwrap();
        let txn = database.begin_write().unwrap();
        {
            let data = txn.open_table(BLOCK_DATA).unwrap();
            let cids = txn.open_table(BLOCK_CIDS).unwrap();
            let mut legacy = txn.open_table(migrate::LEGACY_BLOCKS).unwrap();
            for item in cids.iter().unwrap() {
                let (id, cid) = item.unwrap();
                let bytes = data.get(id.value()).unwrap().unwrap();
                legacy.insert(cid.value(), bytes.value()).unwrap();
            }
        }
        txn.delete_table(BLOCK_DATA).unwrap();
        txn.delete_table(BLOCK_CIDS).unwrap();
        txn.commit().unwrap();
        // A stop part-way through the move: 3 of the 8 blocks moved, in one commit.
        assert_eq!(migrate::move_chunk(&database, 3).unwrap(), (3, false));
    }
    let store = Store::open(&path).unwrap();
    for (b, _) in &c {
        assert_eq!(store.get_block(&b.cid).unwrap(), Some(b.data.clone()));
    }
    assert_eq!(
        store.get_block(&loose.cid).unwrap(),
        Some(loose.data.clone())
    );
    assert_eq!(store.heads("/m/x").unwrap(), vec![c[6].0.cid]);
    assert_eq!(store.stats().unwrap().blocks, 8);
    let walked = store
        .walk(&[c[6].0.cid], &CidSet::default(), 100, u64::MAX, |_, _| {
            true
        })
        .unwrap();
    assert_eq!((walked.sent, walked.missing.len()), (7, 0));
    let txn = store.db.begin_read().unwrap();
    assert!(
        txn.open_table(migrate::LEGACY_BLOCKS).is_err(),
        "the old table is gone"
    );
    drop(txn);
    // Nothing is stored twice, and the stream goes on.
    let again = store.insert_replicas(&c, &[]).unwrap();
    assert_eq!((again.new_blocks, again.already_had), (0, 7));
    let next = append(&store, &kp, "/m/x", 8);
    assert_eq!(next.event.prev, vec![c[6].0.cid]);
}

/// One retention pass over `root` with a byte limit of 0: every log entry goes, and every
/// block but the heads' and own events'.
fn retain_everything(store: &Store, root: &str) -> Retained {
    store
        .retain(
            root,
            Limits {
                max_bytes: Some(0),
                now_ms: 1,
                ..Limits::default()
            },
        )
        .unwrap()
}

/// A chain of `n` events by `kp` on `topic`, seq 1..=n, each linking the one before.
fn chain(kp: &Keypair, topic: &str, n: u64) -> Vec<(Block, Event)> {
    let mut out: Vec<(Block, Event)> = Vec::new();
    for seq in 1..=n {
        let prev = out.last().map(|(b, _)| vec![b.cid]).unwrap_or_default();
        let (e, b) = sign(kp, topic, seq, prev, seq as i128);
        out.push((b, e));
    }
    out
}

#[test]
fn replicas_record_the_holes_they_leave_until_the_blocks_arrive_by_any_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = Store::open(&path).unwrap();
    let kp = Keypair::generate_ed25519();
    let c = chain(&kp, "/t/h", 10);
    let cid = |seq: u64| c[seq as usize - 1].0.cid;
    // 1..=3 held; then 7..=10 arrive newest first, as a fetch sends them: 4..=6 are missing.
    store.insert_replicas(&c[..3], &[]).unwrap();
    let mut top = c[6..].to_vec();
    top.reverse();
    store.insert_replicas(&top, &[]).unwrap();
    let holes = store.holes(10, |_, _| true).unwrap();
    assert_eq!(holes.len(), 1, "{holes:?}");
    let h = &holes[0];
    assert_eq!(
        (h.missing, h.above, h.seq, h.below),
        (cid(6), cid(7), 7, Some((3, cid(3))))
    );
    assert_eq!(h.topic, "/t/h");

    // A hole survives a crash: it is in the store, not in memory.
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.holes(10, |_, _| true).unwrap(), holes);

    // The upper part arrives by a path that records nothing new (a delivery): the hole shrinks
    // and keeps its floor.
    store.insert_events(&c[5..6], &[]).unwrap();
    let holes = store.holes(10, |_, _| true).unwrap();
    assert_eq!(holes.len(), 1);
    assert_eq!(
        (holes[0].missing, holes[0].above, holes[0].below),
        (cid(5), cid(6), Some((3, cid(3))))
    );
    store.insert_events(&c[3..5], &[]).unwrap();
    assert!(store.holes(10, |_, _| true).unwrap().is_empty());

    // Plain inserts (a subscriber's cache of filtered deliveries) record no holes.
    let other = chain(&kp, "/t/other", 5);
    store.insert_events(&other[4..], &[]).unwrap();
    assert!(store.holes(10, |_, _| true).unwrap().is_empty());
    // A replica with nothing below it: the hole goes down to the stream's start.
    store.insert_replicas(&other[2..3], &[]).unwrap();
    let holes = store.holes(10, |_, _| true).unwrap();
    assert_eq!(holes.len(), 1);
    assert_eq!((holes[0].missing, holes[0].below), (other[1].0.cid, None));
    // Only the roots asked for (a broker lists those of its own sets), and not the holes held
    // back (in backoff).
    assert!(store.holes(10, |root, _| root != "t").unwrap().is_empty());
    let missing = other[1].0.cid;
    assert!(store.holes(10, |_, m| *m != missing).unwrap().is_empty());
}

#[test]
fn durables_of_lists_one_subscriber_s_records_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    let rec = |filter: &str| DurableRecord {
        filter: filter.to_string(),
        root: "r".into(),
        start: 0,
        since: None,
        acked: Vec::new(),
        last_used_ms: 1,
        created_ms: 1,
    };
    // "peerA0" sorts right after every "peerA/..." key: a prefix scan must stop before it.
    for (key, filter) in [
        ("peerA/x", "/r/a"),
        ("peerA/y", "/r/b"),
        ("peerA0/z", "/r/c"),
        ("peerB/x", "/r/d"),
        ("peer/x", "/r/e"),
    ] {
        let r = rec(filter);
        store.update_durable(key, move |_| (Some(r), ())).unwrap();
    }
    let mine: Vec<(String, String)> = store
        .durables_of("peerA/")
        .unwrap()
        .into_iter()
        .map(|(k, r)| (k, r.filter))
        .collect();
    assert_eq!(
        mine,
        vec![
            ("peerA/x".to_string(), "/r/a".to_string()),
            ("peerA/y".to_string(), "/r/b".to_string())
        ]
    );
    assert!(store.durables_of("peerC/").unwrap().is_empty());
}

/// One author's next event on `topic`, signed with the links the store gives now.
fn prepared(store: &Store, kp: &Keypair, topic: &str, n: i128) -> (Block, Event) {
    let author = kp.public().encode_protobuf();
    let (seq, prev) = store.next_links(&author, topic).unwrap();
    let (e, b) = sign(kp, topic, seq, prev, n);
    (b, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_group_commits_and_every_write_lands() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("s.redb")).unwrap());
    let kp = Keypair::generate_ed25519();
    // 40 topics appended to at once (one writer per topic, as the router's topic locks make
    // it), and replicas of another author's events inserted beside them.
    let mut tasks = Vec::new();
    for t in 0..40 {
        let (store, kp) = (store.clone(), kp.clone());
        tasks.push(tokio::spawn(async move {
            let topic = format!("/g/t{t}");
            let mut bytes = 0;
            for n in 0..10 {
                let (b, e) = prepared(&store, &kp, &topic, n);
                bytes += b.data.len() as u64;
                store.append_signed(b, e).await.unwrap();
            }
            bytes
        }));
    }
    let other = Keypair::generate_ed25519();
    let mut chain = Vec::new();
    let mut prev = vec![];
    for seq in 1..=50 {
        let (e, b) = sign(&other, "/g/replica", seq, prev, seq as i128);
        prev = vec![b.cid];
        chain.push((b, e));
    }
    for part in chain.chunks(5) {
        let (store, part) = (store.clone(), part.to_vec());
        tasks.push(tokio::spawn(async move {
            store
                .insert_grouped(part.clone(), Vec::new(), |_| true)
                .await
                .unwrap();
            part.iter().map(|(b, _)| b.data.len() as u64).sum::<u64>()
        }));
    }
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await.unwrap();
    }
    let author = kp.public().encode_protobuf();
    for t in 0..40 {
        let topic = format!("/g/t{t}");
        assert_eq!(
            store.last_seq(&author, &topic).unwrap().map(|l| l.0),
            Some(10)
        );
    }
    // The counters and the arrival log, kept in memory through each group commit and written
    // back at its end, count every event once: positions 0.. with no gap and no repeat.
    let stats = store.stats().unwrap();
    assert_eq!((stats.blocks, stats.bytes), (40 * 10 + 50, bytes));
    let log = store.log_range("g", 0, 1_000).unwrap();
    let positions: Vec<u64> = log.iter().map(|(p, _)| *p).collect();
    assert_eq!(positions, (0..450).collect::<Vec<u64>>());
    let distinct: std::collections::HashSet<_> = log.iter().map(|(_, c)| *c).collect();
    assert_eq!(distinct.len(), 450);
    // The replica stream arrived in any order; its holes all closed.
    assert!(store.holes(100, |_, _| true).unwrap().is_empty());
}

#[tokio::test]
async fn a_stale_prepared_append_fails_alone_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    let kp = Keypair::generate_ed25519();
    let (b1, e1) = prepared(&store, &kp, "/c/t", 1);
    // Prepared on the same links: the second is stale once the first is stored.
    let (b2, e2) = prepared(&store, &kp, "/c/t", 2);
    let other = Keypair::generate_ed25519();
    let (e3, b3) = sign(&other, "/c/t", 1, vec![], 3);
    let (first, stale, replica) = tokio::join!(
        store.append_signed(b1.clone(), e1),
        store.append_signed(b2.clone(), e2),
        store.insert_grouped(vec![(b3.clone(), e3)], Vec::new(), |_| false),
    );
    first.unwrap();
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    replica.unwrap();
    assert!(store.has_block(&b1.cid).unwrap());
    assert!(!store.has_block(&b2.cid).unwrap());
    assert!(store.has_block(&b3.cid).unwrap());
    assert_eq!(store.stats().unwrap().blocks, 2);
}

#[tokio::test]
async fn queued_appends_chain_before_durable_and_fall_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    let kp = Keypair::generate_ed25519();
    // Three events linked one to the next and queued before any is durable: all land.
    let mut prev = vec![];
    let mut answers = Vec::new();
    let mut cids = Vec::new();
    for seq in 1..=3 {
        let (e, b) = sign(&kp, "/q/t", seq, prev, seq as i128);
        prev = vec![b.cid];
        cids.push(b.cid);
        answers.push(store.queue_signed(Arc::new(b), Arc::new(e)).unwrap());
    }
    for a in answers {
        a.await.unwrap();
    }
    let author = kp.public().encode_protobuf();
    assert_eq!(store.last_seq(&author, "/q/t").unwrap(), Some((3, cids[2])));
    // 4 is prepared on a 3' that is not the stored 3 (same seq, other event): 3' is refused,
    // and 4 with it, though its seq follows the store's.
    let (e3x, b3x) = sign(&kp, "/q/t", 3, vec![cids[1]], 33);
    let (e4, b4) = sign(&kp, "/q/t", 4, vec![b3x.cid], 4);
    let wrong = store
        .queue_signed(Arc::new(b3x.clone()), Arc::new(e3x))
        .unwrap();
    let behind = store
        .queue_signed(Arc::new(b4.clone()), Arc::new(e4))
        .unwrap();
    assert!(matches!(wrong.await, Err(StoreError::Conflict(_))));
    assert!(matches!(behind.await, Err(StoreError::Conflict(_))));
    assert!(!store.has_block(&b3x.cid).unwrap());
    assert!(!store.has_block(&b4.cid).unwrap());
    assert_eq!(store.last_seq(&author, "/q/t").unwrap(), Some((3, cids[2])));
    store.settle().await.unwrap();
    assert_eq!(store.stats().unwrap().blocks, 3);
}

/// What the crash child writes through the group committer: a chain on one topic as the
/// primary takes publishes, replicas with an extra block on another, and a durable record.
async fn write_for_crash(store: &Store, kp: &Keypair, other: &Keypair) -> Vec<Cid> {
    let mut acked = Vec::new();
    for n in 0..30 {
        let (b, e) = prepared(store, kp, "/crash/own", n);
        acked.push(b.cid);
        store
            .insert_publish(Arc::new(b), Arc::new(e))
            .await
            .unwrap();
    }
    let mut prev = vec![];
    let mut part = Vec::new();
    for seq in 1..=20 {
        let (e, b) = sign(other, "/crash/replica", seq, prev, seq as i128);
        prev = vec![b.cid];
        acked.push(b.cid);
        part.push((b, e));
    }
    let extra =
        Block::new_dag_cbor(serde_ipld_dagcbor::to_vec(&Ipld::String("body".into())).unwrap())
            .unwrap();
    acked.push(extra.cid);
    store
        .insert_grouped(part, vec![extra], |_| true)
        .await
        .unwrap();
    acked
}

fn crash_record() -> DurableRecord {
    DurableRecord {
        filter: "/crash/**".into(),
        root: "crash".into(),
        start: 3,
        since: None,
        acked: Vec::new(),
        last_used_ms: 7,
        created_ms: 7,
    }
}

/// The child of [`acknowledged_writes_survive_a_crash_through_the_write_ahead_log`]: writes,
/// hears every write acknowledged, records what was acknowledged, and dies without closing
/// the store (no last checkpoint), as `kill -9` would leave it.
#[test]
#[ignore = "run by acknowledged_writes_survive_a_crash_through_the_write_ahead_log"]
fn crash_child_writes_then_aborts() {
    let Ok(dir) = std::env::var("TIDINGS_WAL_CRASH_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = Store::open(&dir.join("s.redb")).unwrap();
    let kp = Keypair::generate_ed25519();
    let other = Keypair::generate_ed25519();
    let acked = rt.block_on(write_for_crash(&store, &kp, &other));
    let rec = crash_record();
    store
        .update_durable("peer/crash", move |_| (Some(rec), ()))
        .unwrap();
    store
        .update_durable("peer/gone", |_| (Some(crash_record()), ()))
        .unwrap();
    store.update_durable("peer/gone", |_| (None, ())).unwrap();
    let list: Vec<String> = acked.iter().map(Cid::to_string).collect();
    std::fs::write(dir.join("acked"), list.join("\n")).unwrap();
    std::fs::write(dir.join("author"), kp.public().encode_protobuf()).unwrap();
    std::process::abort();
}

#[test]
fn acknowledged_writes_survive_a_crash_through_the_write_ahead_log() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::tests::crash_child_writes_then_aborts",
            "--ignored",
            "--nocapture",
        ])
        .env("TIDINGS_WAL_CRASH_DIR", dir.path())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die, not close the store");
    let acked: Vec<Cid> = std::fs::read_to_string(dir.path().join("acked"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(acked.len(), 51);
    let wal = wal::path_for(&dir.path().join("s.redb"));
    let in_log = |wal: &std::path::Path| wal::Wal::open(wal).unwrap().1.len();
    assert!(
        in_log(&wal) > 0,
        "the acknowledged writes are in the log, waiting for a checkpoint"
    );

    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    for cid in &acked {
        assert!(store.has_block(cid).unwrap(), "acknowledged {cid} lost");
    }
    let author = std::fs::read(dir.path().join("author")).unwrap();
    assert_eq!(
        store.last_seq(&author, "/crash/own").unwrap(),
        Some((30, acked[29]))
    );
    assert_eq!(store.heads("/crash/own").unwrap(), vec![acked[29]]);
    assert_eq!(store.heads("/crash/replica").unwrap(), vec![acked[49]]);
    assert_eq!(
        logged(&store, "crash"),
        acked[..50].to_vec(),
        "arrival order kept, nothing twice"
    );
    assert_eq!(store.stats().unwrap().blocks, 51);
    assert!(store.holes(100, |_, _| true).unwrap().is_empty());
    assert_eq!(store.durable("peer/crash").unwrap(), Some(crash_record()));
    assert_eq!(store.durable("peer/gone").unwrap(), None);
    // Replayed and made durable: the log is empty again, and a second open has nothing to do.
    assert_eq!(in_log(&wal), 0);
    drop(store);
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    assert_eq!(store.stats().unwrap().blocks, 51);
}

#[tokio::test]
async fn replay_applies_logged_changes_to_a_store_that_lacks_them_and_skips_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let kp = Keypair::generate_ed25519();
    let (e1, b1) = sign(&kp, "/r/t", 1, vec![], 1);
    let (e2, b2) = sign(&kp, "/r/t", 2, vec![b1.cid], 2);
    let (e3, b3) = sign(&kp, "/r/t", 3, vec![b2.cid], 3);
    {
        // The store holds event 1 durably; the log holds 1 (already applied), 3 (whose
        // predecessor is missing: a hole, since it was logged with holes on) and a record.
        let store = Store::open(&path).unwrap();
        store.insert_events(&[(b1.clone(), e1)], &[]).unwrap();
    }
    let ev = |b: &Block, holes| redo::Redo::Event {
        cid: b.cid.to_bytes(),
        data: b.data.clone(),
        holes,
    };
    let rec = serde_ipld_dagcbor::to_vec(&crash_record()).unwrap();
    let (mut log, _) = wal::Wal::open(&wal::path_for(&path)).unwrap();
    log.append(&[ev(&b1, true)]).unwrap();
    log.append(&[
        ev(&b3, true),
        redo::Redo::Durable {
            key: "k".into(),
            value: Some(rec),
        },
    ])
    .unwrap();
    drop(log);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.stats().unwrap().blocks, 2);
    assert_eq!(
        store
            .last_seq(&kp.public().encode_protobuf(), "/r/t")
            .unwrap(),
        Some((3, b3.cid))
    );
    // Event 1 stays a head until event 2, which links it, arrives.
    let mut both = vec![b1.cid, b3.cid];
    both.sort();
    assert_eq!(store.heads("/r/t").unwrap(), both);
    let holes = store.holes(10, |_, _| true).unwrap();
    assert_eq!(holes.len(), 1, "{holes:?}");
    assert_eq!(store.durable("k").unwrap(), Some(crash_record()));
    // The hole closes when event 2 arrives, as it would have without the crash.
    store
        .insert_grouped(vec![(b2, e2)], Vec::new(), |_| true)
        .await
        .unwrap();
    assert!(store.holes(10, |_, _| true).unwrap().is_empty());
    assert_eq!(store.heads("/r/t").unwrap(), vec![b3.cid]);
    assert_eq!(e3.seq, 3);
}

#[test]
fn holds_all_is_true_only_once_every_block_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    let kp = Keypair::generate_ed25519();
    let events = chain(&kp, "/h/t", 3);
    let cids: Vec<Cid> = events.iter().map(|(b, _)| b.cid).collect();
    assert!(store.holds_all(&[]).unwrap(), "nothing asked: all held");
    assert!(!store.holds_all(&cids).unwrap());
    store.insert_events(&events[..2], &[]).unwrap();
    assert!(store.holds_all(&cids[..2]).unwrap());
    assert!(!store.holds_all(&cids).unwrap(), "the third is not stored");
    store.insert_events(&events[2..], &[]).unwrap();
    assert!(store.holds_all(&cids).unwrap());
}

#[tokio::test]
async fn every_group_commit_is_timed_and_a_checkpoint_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    let times = store.commit_times();
    let kp = Keypair::generate_ed25519();
    let other = Keypair::generate_ed25519();
    write_for_crash(&store, &kp, &other).await;
    let stats = store.commit_stats();
    assert!(stats.commits >= 2, "{stats:?}");
    assert_eq!(
        times.commit.count(),
        stats.commits,
        "one observation per group commit"
    );
    let wal = wal::path_for(&dir.path().join("s.redb"));
    let logged = wal::Wal::open(&wal).unwrap().1.len();
    assert!(logged > 0, "an idle store commits through the log");
    assert_eq!(
        times.checkpoint.count(),
        stats.checkpoints,
        "checkpoints counted and timed alike"
    );
    let before = times.checkpoint.count();
    // Closing the store makes the last checkpoint, which empties the log: timed as one.
    drop(store);
    assert_eq!(times.checkpoint.count(), before + 1);
    assert_eq!(times.commit.count(), stats.commits + 1);
}

/// `next_links` as a fresh read transaction gives it, without the kept answers.
fn links_read_now(store: &Store, author: &[u8], topic: &str) -> (u64, Vec<Cid>) {
    let txn = store.db.begin_read().unwrap();
    links(
        last_in(&txn, author, topic).unwrap(),
        heads_in(&txn, topic).unwrap(),
    )
}

#[tokio::test]
async fn next_links_kept_between_commits_are_always_those_of_a_fresh_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    let (me, other) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let my_key = me.public().encode_protobuf();
    let topics = ["/k/a", "/k/b"];
    let mut their_prev: Vec<Vec<Cid>> = vec![vec![], vec![]];
    let mut their_seq = [0u64; 2];
    // Every path that writes heads or seqs, in a seeded random order, each followed by the
    // links asked twice (the second answer is a kept one) and compared with a fresh read.
    let mut rng: u64 = 0x5eed_0f11;
    let mut kept = 0;
    for step in 0..300 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let t = (rng >> 8) as usize % 2;
        let topic = topics[t];
        match rng % 5 {
            // Our own publish, as the router does it: links, sign, group commit.
            0 | 1 => {
                let (b, e) = prepared(&store, &me, topic, step);
                store.append_signed(b, e).await.unwrap();
            }
            // Another writer's event on the same topic (a replica or a delivery).
            2 => {
                their_seq[t] += 1;
                let (e, b) = sign(&other, topic, their_seq[t], their_prev[t].clone(), step);
                their_prev[t] = vec![b.cid];
                store
                    .insert_grouped(vec![(b, e)], Vec::new(), |_| true)
                    .await
                    .unwrap();
            }
            // Our own publish through its own transaction.
            3 => {
                append(&store, &me, topic, step);
            }
            // Retention on the root: a separate transaction that may delete old blocks.
            _ => {
                store
                    .retain(
                        "k",
                        Limits {
                            max_age_ms: None,
                            max_bytes: Some(4_000),
                            now_ms: 1_763_700_000_000,
                            pin_from: None,
                            own_author: &my_key,
                        },
                    )
                    .unwrap();
            }
        }
        for topic in topics {
            let first = store.next_links(&my_key, topic).unwrap();
            assert_eq!(first, links_read_now(&store, &my_key, topic), "step {step}");
            let version = store.db.version();
            let again = store.next_links(&my_key, topic).unwrap();
            assert_eq!(again, first, "step {step}: a kept answer differs");
            if store.cached_links(version, &my_key, topic).is_some() {
                kept += 1;
            }
        }
    }
    // The kept answers were used, so the comparison above tested them.
    assert!(kept >= 500, "only {kept} answers kept");
}

/// What the block index costs: memory per block and the time to build it at open, over
/// `TIDINGS_INDEX_BLOCKS` blocks (200,000 by default). Run with
/// `cargo test --release -p tidings-node --lib what_the_block_index_costs -- --ignored --nocapture`.
#[test]
#[ignore]
fn what_the_block_index_costs() {
    use block_index::{BLOCK_CIDS, BlockIndex};
    use redb::{ReadableDatabase, ReadableTable};
    let n: usize = std::env::var("TIDINGS_INDEX_BLOCKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    let blocks: Vec<Block> = (0..n as u64)
        .map(|i| {
            // A DAG-CBOR byte string of 300 bytes, distinct per block.
            let mut data = vec![0x59, 0x01, 0x2c];
            data.extend(i.to_be_bytes());
            data.resize(303, 7);
            Block::new_dag_cbor(data).unwrap()
        })
        .collect();
    for chunk in blocks.chunks(10_000) {
        store.insert_replicas(&[], chunk).unwrap();
    }
    let rss = || -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    };
    let txn = store.db.begin_read().unwrap();
    let table = txn.open_table(BLOCK_CIDS).unwrap();
    // Read once so that redb's cache holds the table: what follows is the index alone.
    assert_eq!(table.iter().unwrap().count(), n);
    let before = rss();
    let started = std::time::Instant::now();
    let index = BlockIndex::load(&table).unwrap();
    let took = started.elapsed();
    let after = rss();
    assert!(index.id_of(&blocks[n - 1].cid.to_bytes()).is_some());
    println!(
        "block index of {n} blocks: built in {took:?} ({:.0} ns per block), {:.0} bytes per block",
        took.as_nanos() as f64 / n as f64,
        after.saturating_sub(before) as f64 / n as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_writer_commits_through_the_log_and_checkpoints_by_its_size() {
    // Eight streams written at once, in batches of 4 events, as fast as the writer takes them:
    // far above the 2,000 operations a second at which the writer used to make every batch a
    // durable redb commit (every page it touched, then an fsync). It now logs every batch and
    // makes a checkpoint each time the log has grown to CHECKPOINT_BYTES.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let store = Arc::new(Store::open(&path).unwrap());
    let mut tasks = Vec::new();
    for s in 0..8u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let kp = Keypair::ed25519_from_bytes([s + 1; 32]).unwrap();
            let events = chain(&kp, &format!("/busy/s{s}"), 2_000);
            let mut bytes = 0u64;
            for part in events.chunks(4) {
                bytes += part.iter().map(|(b, _)| b.data.len() as u64).sum::<u64>();
                store
                    .insert_grouped(part.to_vec(), Vec::new(), |_| true)
                    .await
                    .unwrap();
            }
            bytes
        }));
    }
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await.unwrap();
    }
    let stats = store.commit_stats();
    // Each checkpoint follows at least CHECKPOINT_BYTES of log, and the log holds every block
    // (with its CID and framing): so at least this many, less the last, partial one.
    let expected = bytes / (wal::CHECKPOINT_BYTES + (64 << 10));
    assert!(expected >= 2, "the test writes too little: {bytes} bytes");
    assert!(
        stats.checkpoints >= expected,
        "{bytes} bytes of blocks made only {} checkpoints: {stats:?}",
        stats.checkpoints
    );
    assert!(
        stats.commits >= 10 * stats.checkpoints,
        "most commits go through the log, not a durable redb commit each: {stats:?}"
    );
}
