//! Tests of the `tidings` binary itself: help texts and refusals at start.

use std::process::Command;

fn tidings() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
}

/// `tidings node` on `data` with OS-chosen API and libp2p ports.
fn node_on(data: &std::path::Path) -> Command {
    let mut cmd = tidings();
    cmd.args([
        "node",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--api",
        "127.0.0.1:0",
        "--data",
    ])
    .arg(data);
    cmd
}

#[test]
fn every_command_has_help_with_an_example() {
    for cmd in [
        "node", "pub", "sub", "get", "heads", "export", "import", "status",
    ] {
        let out = tidings().args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success(), "{cmd} --help failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Example"),
            "{cmd} --help has no example:\n{text}"
        );
    }
}

#[test]
fn non_loopback_api_without_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = tidings()
        .args([
            "node",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "0.0.0.0:0",
            "--data",
        ])
        .arg(dir.path())
        .env_remove("TIDINGS_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not loopback") && err.contains("--token"),
        "{err}"
    );
}

#[test]
fn a_second_node_on_the_same_data_dir_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = node_on(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = dir.path().join("api.addr");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !addr.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "first node did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = node_on(dir.path()).output().unwrap();
    let _ = first.kill();
    let _ = first.wait();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already in use"), "{err}");
}
