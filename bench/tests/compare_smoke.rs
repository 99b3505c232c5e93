//! Smoke tests of the compare driver against real servers.
//!
//! `quick_run_writes_results_and_report` runs every system and is ignored by default: it needs
//! mosquitto and a current nats-server (`bench/compare.sh` installs both) and the release tidings
//! binary. Run it with `cargo test --release -p tidings-bench --test compare_smoke -- --ignored`.
//!
//! The jetstream-sync tests run in CI: they need the nats-server `bench/nats-server.sh` installs
//! (scripts/test.sh runs it and exports `NATS_SERVER`; without `NATS_SERVER` they look where
//! that script puts it, and fail with the command to run if it is not there).

use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
#[ignore = "needs nats-server 2.10+, mosquitto and a built tidings binary"]
fn quick_run_writes_results_and_report() {
    let out = tempfile::tempdir().expect("temp dir");
    let status = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args(["--quick", "--secs", "0.5", "--out"])
        .arg(out.path())
        .args(["--scenarios", "throughput,filter,persist-1"])
        .status()
        .expect("running compare");
    assert!(status.success(), "compare failed: {status}");
    let page = std::fs::read_to_string(out.path().join("RESULTS.md")).expect("RESULTS.md");
    for sys in [
        "nats",
        "jetstream",
        "jetstream-sync",
        "mqtt-qos0",
        "mqtt-qos1",
        "gossipsub",
        "tidings-1",
        "tidings-3",
    ] {
        assert!(
            page.contains(&format!("| {sys} |")),
            "{sys} missing:\n{page}"
        );
    }
    assert!(!page.contains("failed:"), "a measurement failed:\n{page}");
    for svg in ["throughput.svg", "latency.svg", "filter.svg"] {
        assert!(out.path().join("results").join(svg).exists(), "{svg}");
    }
}

/// The nats-server `bench/nats-server.sh` installs (or `$NATS_SERVER`).
fn nats_server() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-tools/nats-server-2.15.1/bin/nats-server");
    assert!(
        p.exists(),
        "no nats-server 2.10+: run `bench/nats-server.sh` once (it installs one under target/) \
         or set NATS_SERVER"
    );
    p
}

/// Runs the driver in its quickest form against the installed nats-server, writing to `out`;
/// fails the test (with the driver's log) unless it succeeded.
fn quickest(out: &Path, args: &[&str]) {
    let run = Command::new(env!("CARGO_BIN_EXE_compare"))
        .env("NATS_SERVER", nats_server())
        .args(["--quick", "--secs", "0.3", "--grace", "5", "--out"])
        .arg(out)
        .args(args)
        .output()
        .expect("running compare");
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "compare failed: {}\n{log}",
        run.status
    );
}

/// jetstream-sync and jetstream side by side in their quickest form: both run, lose nothing,
/// and the driver has checked on each server's /varz that it syncs as its row says (a row whose
/// server does not fsync before the ack fails instead of being measured).
#[test]
fn jetstream_sync_runs_beside_jetstream() {
    let out = tempfile::tempdir().expect("temp dir");
    quickest(
        out.path(),
        &[
            "--systems",
            "jetstream,jetstream-sync",
            "--scenarios",
            "persist-1,throughput",
        ],
    );
    let page = std::fs::read_to_string(out.path().join("RESULTS.md")).expect("RESULTS.md");
    assert!(!page.contains("failed:"), "a measurement failed:\n{page}");
    for sys in ["jetstream", "jetstream-sync"] {
        let rows: Vec<&str> = page
            .lines()
            .filter(|l| l.starts_with(&format!("| {sys} | 1 |")))
            .collect();
        assert_eq!(rows.len(), 2, "{sys}: one row per scenario:\n{page}");
        for r in rows {
            assert!(r.contains("| 0 / 0 of "), "{sys} lost or duplicated: {r}");
        }
    }
    assert!(page.contains("| nats-server | nats-server: v2."), "{page}");
}

/// An old nats-server (2.9, no `sync_interval`) is refused before anything is measured, with
/// the reason, rather than measured as if it synced.
#[test]
fn jetstream_sync_refuses_a_server_without_sync_interval() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fake = dir.path().join("nats-server");
    std::fs::write(&fake, "#!/bin/sh\necho 'nats-server: v2.9.10'\n").expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let run = Command::new(env!("CARGO_BIN_EXE_compare"))
        .env("NATS_SERVER", &fake)
        .args(["--quick", "--systems", "jetstream-sync", "--out"])
        .arg(dir.path().join("out"))
        .output()
        .expect("running compare");
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "an old server was accepted: {err}");
    assert!(
        err.contains("needs nats-server 2.10 or later") && err.contains("v2.9.10"),
        "{err}"
    );
    assert!(!dir.path().join("out/results").exists(), "measured anyway");
}

/// `--timings` writes one line per published event, each with its publish call's duration and
/// the subscriber's delivery, and as many lines as the record says were published.
#[test]
fn timings_has_a_line_for_every_published_event() {
    let out = tempfile::tempdir().expect("temp dir");
    let timings = out.path().join("timings.jsonl");
    let timings_arg = timings.to_str().expect("a UTF-8 temp path");
    quickest(
        out.path(),
        &[
            "--systems",
            "jetstream-sync",
            "--scenarios",
            "persist-1",
            "--timings",
            timings_arg,
        ],
    );
    let results = std::fs::read_dir(out.path().join("results"))
        .expect("results dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .expect("a results file");
    let (_, records) =
        tidings_bench::report::parse(&std::fs::read_to_string(&results).expect("results"))
            .expect("a results file the report reads");
    let [record] = records.as_slice() else {
        panic!("one measurement, got {records:?}");
    };
    let published = record.published as u64;
    assert!(published > 0, "{record:?}");
    let text = std::fs::read_to_string(&timings).expect("timings file");
    let lines: Vec<tidings_bench::harness::EventTiming> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a timing line"))
        .collect();
    assert_eq!(
        lines.len() as u64,
        published,
        "one line per published event"
    );
    let mut ids = std::collections::HashSet::new();
    for t in &lines {
        assert_eq!(
            (t.system.as_str(), t.scenario.as_str()),
            ("jetstream-sync", "persist-1")
        );
        assert!(ids.insert(t.id), "event {} twice", t.id);
        assert!(t.publish_us > 0.0 && t.at_s >= 0.0, "{t:?}");
        // One subscriber, nothing lost: every event arrived, after its publish started.
        assert_eq!(t.delivery_us.len(), 1, "{t:?}");
        assert!(t.delivery_us[0].is_some_and(|d| d > 0.0), "{t:?}");
    }
    // The same file as a timeline: a line per interval in which something was published, and
    // every event in one of them.
    let every = 0.1;
    let run = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args(["--timeline", timings_arg, "--every", &every.to_string()])
        .output()
        .expect("running compare --timeline");
    assert!(run.status.success(), "{run:?}");
    let table = String::from_utf8_lossy(&run.stdout);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split(' ').collect())
        .collect();
    let slots: std::collections::BTreeSet<u64> = lines
        .iter()
        .map(|t| (t.at_s / every).floor() as u64)
        .collect();
    assert_eq!(rows.len(), slots.len(), "{table}");
    let events: u64 = rows
        .iter()
        .map(|r| r[4].parse::<u64>().expect("events"))
        .sum();
    assert_eq!(events, published, "{table}");
}
