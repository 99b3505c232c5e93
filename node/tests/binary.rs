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

/// Waits for `data/api.addr` (the node is up) and returns the node's `/v1/status` listen port.
fn wait_up(data: &std::path::Path) -> String {
    let addr = data.join("api.addr");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !addr.exists() {
        assert!(std::time::Instant::now() < deadline, "node did not start");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::read_to_string(addr).unwrap().trim().to_string()
}

/// A free TCP port on loopback, chosen by the OS.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_second_node_on_the_same_libp2p_port_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let node = |data: &str| {
        let mut cmd = tidings();
        cmd.args([
            "node",
            "--api",
            "127.0.0.1:0",
            "--listen",
            &listen,
            "--data",
        ])
        .arg(dir.path().join(data))
        .env("RUST_LOG", "info");
        cmd
    };
    let mut first = node("a")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_up(&dir.path().join("a"));
    let err_file = dir.path().join("b.err");
    let mut second = node("b")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .spawn()
        .unwrap();
    // It must exit on its own; one still running after 30 s shares the port (the bug).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() >= deadline {
            let _ = second.kill();
            let _ = second.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let _ = first.kill();
    let _ = first.wait();
    let err = std::fs::read_to_string(&err_file).unwrap();
    let status = status.unwrap_or_else(|| panic!("a second node runs on {listen}:\n{err}"));
    assert!(
        !status.success(),
        "a second node started on {listen}:\n{err}"
    );
    assert!(
        err.contains(&format!(
            "cannot listen on {listen}: the port is already in use"
        )),
        "{err}"
    );
    assert!(!err.contains("listening"), "libp2p started anyway:\n{err}");
}

#[test]
fn a_taken_api_port_is_refused_once_and_before_libp2p_starts() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = taken.local_addr().unwrap().to_string();
    let out = tidings()
        .args([
            "node",
            "--api",
            &api,
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--data",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.matches("in use").count(), 1, "{err}");
    assert!(
        err.contains(&format!("cannot serve the API on {api}")),
        "{err}"
    );
    assert!(!err.contains("listening"), "libp2p started first:\n{err}");
    assert!(
        !dir.path().join("store.redb").exists(),
        "the store was opened before the API port was checked"
    );
}

#[test]
fn every_help_example_quotes_what_the_shell_would_expand() {
    for cmd in [
        "node",
        "devnet",
        "pub",
        "sub",
        "get",
        "fetch",
        "heads",
        "export",
        "import",
        "status",
        "unsub-durable",
    ] {
        let out = tidings().args([cmd, "--help"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text
            .lines()
            .filter(|l| l.trim_start().starts_with("tidings "))
        {
            // Every `*` must sit inside single quotes.
            let mut quoted = false;
            for c in line.split('#').next().unwrap_or(line).chars() {
                match c {
                    '\'' => quoted = !quoted,
                    '*' => assert!(quoted, "unquoted pattern in `{cmd} --help`: {line}"),
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn a_bad_filter_is_pointed_at_before_any_connection() {
    // No node runs on this port: the filter is checked first.
    let out = tidings()
        .args([
            "sub",
            "/stocks/** where price 10",
            "--api",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "\n  /stocks/** where price 10\n  {}^",
            " ".repeat(23)
        )),
        "{err}"
    );
}
