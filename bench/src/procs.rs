//! Child processes (servers under test), free ports, and waiting for things to come up.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// A child process, killed and reaped on drop; its stderr goes to `log`.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr into `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Result<Proc> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning {cmd:?}"))?;
        Ok(Proc {
            child,
            log: log.to_path_buf(),
        })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The log so far (for error messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails if the process has already exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("exited with {status}:\n{}", self.log_text());
        }
        Ok(())
    }

    /// Waits until `addr` accepts TCP connections (the server is up).
    pub async fn wait_tcp(&mut self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{addr} not accepting after {timeout:?}:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago (the OS chose it). Servers that cannot bind
/// port 0 and report it (mosquitto) get one of these.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `$env_var`, else `name` on `PATH`, else `/usr/sbin/name` (where Debian puts the servers, not
/// always on a user's `PATH`).
pub fn find_binary(name: &str, env_var: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin")]) {
        let cand = dir.join(name);
        if cand.is_file() {
            return Ok(cand);
        }
    }
    bail!(
        "{name} not found on PATH or in /usr/sbin: run bench/compare.sh (apt-get install {name}) or set {env_var}"
    )
}

/// Polls `f` every 20 ms until it yields `Some`, or fails after `timeout`.
pub async fn poll_until<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `tidings` binary: `$TIDINGS_BIN`, else `tidings` next to this executable
/// (`target/<profile>/`). Under `cargo run` (`$CARGO` set) it is built first, into the same
/// target dir and profile, so it is never missing or stale; once per process.
pub fn tidings_bin() -> Result<PathBuf> {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    if let Some(b) = BIN.get() {
        return Ok(b.clone());
    }
    let b = find_or_build_tidings()?;
    Ok(BIN.get_or_init(|| b).clone())
}

fn find_or_build_tidings() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TIDINGS_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let profile_dir = exe.parent().context("executable has no directory")?;
    let bin = profile_dir.join(format!("tidings{}", std::env::consts::EXE_SUFFIX));
    if let (Some(cargo), Some(target_dir), Some(profile)) = (
        std::env::var_os("CARGO"),
        profile_dir.parent(),
        profile_dir.file_name().and_then(|p| p.to_str()),
    ) {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "tidings-node", "--bin", "tidings"])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(target_dir);
        match profile {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        eprintln!("building the tidings binary ({profile})…");
        let status = cmd.status().context("running cargo build for tidings")?;
        ensure!(
            status.success(),
            "cargo build -p tidings-node failed: {status}"
        );
    }
    ensure!(
        bin.exists(),
        "{} not found: build it with `cargo build --release -p tidings-node` or set TIDINGS_BIN",
        bin.display()
    );
    Ok(bin)
}
