//! Smoke test of the whole compare driver against real servers. Ignored by default: it needs
//! nats-server and mosquitto installed (`bench/compare.sh` installs them) and the tidings binary
//! built. Run with `cargo test --release -p tidings-bench --test compare_smoke -- --ignored`.

use std::process::Command;

#[test]
#[ignore = "needs nats-server, mosquitto and a built tidings binary"]
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
