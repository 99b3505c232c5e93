//! The README's tour, run as a script: every ```console block of README.md, in order, each
//! `$ command` run by bash against real nodes on ports the OS chose, its output (stdout and
//! stderr) compared with the lines the README shows under it. It fails on the first command
//! whose output differs, so the README cannot drift from what the binary does.
//!
//! What differs from run to run is matched, not compared:
//! * CIDs (`bafy…`), peer ids (`12D3KooW…`) and times (13-digit ms) in the README are samples:
//!   the first time a sample appears in output it is bound to what the command printed there,
//!   and later commands and outputs use the bound value (so `tidings get <CID printed by pub>`
//!   works, and the CID `get` prints must be that one);
//! * the README's ports (7700, 7702, ...) are replaced by free ports, and `/tmp/` by a temp dir;
//! * `…` in an output line matches any text; a line that is only `…` matches any number of lines.
//!
//! A `$ command &` runs in the background (killed at the end); the lines under it are the first
//! it prints. Read-only commands (`cat`, `curl`, `tidings status|get|heads`) are retried for a
//! few seconds while their output differs, as a person would look again: deliveries and peer
//! connections take a moment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tidings_tests::{NodeProcess, line_channel, tidings_bin};

/// The README's own ports: each is replaced by a free one.
const PORTS: [u16; 6] = [7700, 7800, 7702, 7802, 7703, 7803];
/// How long a read-only command is retried while its output differs.
const RETRY_FOR: Duration = Duration::from_secs(15);

/// One `$ command` and the lines the README shows under it.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
    /// Its line in README.md, for messages.
    line: usize,
}

/// The steps of every ```console block, in order.
fn steps(readme: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    let mut continued = false;
    for (i, line) in readme.lines().enumerate() {
        if !in_block {
            in_block = line.trim_end() == "```console";
            continue;
        }
        if line.trim_end() == "```" {
            in_block = false;
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            continued = cmd.ends_with('\\');
            steps.push(Step {
                command: cmd.trim_end_matches('\\').to_string(),
                expected: Vec::new(),
                line: i + 1,
            });
        } else if let Some(step) = steps.last_mut() {
            if continued {
                continued = line.ends_with('\\');
                step.command.push(' ');
                step.command.push_str(line.trim().trim_end_matches('\\'));
            } else {
                step.expected.push(line.to_string());
            }
        }
    }
    steps
}

/// The kinds of text that differ between runs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Cid,
    Peer,
    Time,
}

/// The variable token at the start of `s`, if any: (kind, length in bytes).
fn token_at(s: &str) -> Option<(Kind, usize)> {
    let run = |skip: usize, ok: fn(char) -> bool| {
        skip + s[skip..].find(|c: char| !ok(c)).unwrap_or(s.len() - skip)
    };
    if s.starts_with("bafy") {
        let n = run(4, |c| c.is_ascii_lowercase() || ('2'..='7').contains(&c));
        if n >= 50 {
            return Some((Kind::Cid, n));
        }
    }
    if s.starts_with("12D3KooW") {
        let n = run(8, |c| c.is_ascii_alphanumeric() && !"0OIl".contains(c));
        if n >= 50 {
            return Some((Kind::Peer, n));
        }
    }
    if s.starts_with('1') {
        let n = run(0, |c| c.is_ascii_digit());
        if n == 13 {
            return Some((Kind::Time, n));
        }
    }
    None
}

/// Pieces of an expected output line.
#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Var(Kind, String),
    Any,
}

fn pieces(line: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut i = 0;
    let mut prev_alnum = false;
    while i < line.len() {
        let rest = &line[i..];
        if let Some(r) = rest.strip_prefix('…') {
            out.push(Piece::Text(std::mem::take(&mut text)));
            out.push(Piece::Any);
            i = line.len() - r.len();
            prev_alnum = false;
            continue;
        }
        if !prev_alnum && let Some((kind, n)) = token_at(rest) {
            out.push(Piece::Text(std::mem::take(&mut text)));
            out.push(Piece::Var(kind, rest[..n].to_string()));
            i += n;
            prev_alnum = true;
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        text.push(c);
        prev_alnum = c.is_ascii_alphanumeric();
        i += c.len_utf8();
    }
    out.push(Piece::Text(text));
    out.into_iter()
        .filter(|p| !matches!(p, Piece::Text(t) if t.is_empty()))
        .collect()
}

/// Samples bound to what the run printed.
type Bindings = HashMap<String, String>;

/// Matches `actual` against the pieces, extending `b`.
fn match_line(ps: &[Piece], actual: &str, b: &Bindings) -> Option<Bindings> {
    let Some((first, rest)) = ps.split_first() else {
        return actual.is_empty().then(|| b.clone());
    };
    match first {
        Piece::Text(t) => match_line(rest, actual.strip_prefix(t.as_str())?, b),
        Piece::Var(kind, sample) => {
            let (k, n) = token_at(actual)?;
            if k != *kind {
                return None;
            }
            let got = &actual[..n];
            let mut b = b.clone();
            match b.get(sample) {
                Some(bound) if bound != got => return None,
                Some(_) => {}
                None => {
                    // Two samples may not stand for one value.
                    if b.values().any(|v| v == got) {
                        return None;
                    }
                    b.insert(sample.clone(), got.to_string());
                }
            }
            match_line(rest, &actual[n..], &b)
        }
        Piece::Any => (0..=actual.len())
            .filter(|i| actual.is_char_boundary(*i))
            .find_map(|i| match_line(rest, &actual[i..], b)),
    }
}

/// Matches all of `actual` against the expected lines (a line `…` matching any lines).
fn match_lines(expected: &[String], actual: &[String], b: &Bindings) -> Option<Bindings> {
    let Some((first, rest)) = expected.split_first() else {
        return actual.is_empty().then(|| b.clone());
    };
    if first == "…" {
        return (0..=actual.len()).find_map(|i| match_lines(rest, &actual[i..], b));
    }
    let (line, more) = actual.split_first()?;
    let b = match_line(&pieces(first), line, b)?;
    match_lines(rest, more, &b)
}

/// The run's environment: its directory, ports and background processes.
struct Tour {
    dir: PathBuf,
    ports: HashMap<u16, u16>,
    path: String,
    background: Vec<(Child, mpsc::Receiver<String>)>,
}

impl Drop for Tour {
    fn drop(&mut self) {
        for (c, _) in &mut self.background {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Tour {
    /// The README's text with this run's ports and directory.
    fn localise(&self, text: &str) -> String {
        let mut t = text.replace("/tmp/", &format!("{}/", self.dir.display()));
        for (readme, real) in &self.ports {
            t = t
                .replace(&format!("127.0.0.1:{readme}"), &format!("127.0.0.1:{real}"))
                .replace(&format!("/tcp/{readme}"), &format!("/tcp/{real}"));
        }
        t
    }

    fn bash(&self, script: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(format!("exec 2>&1; {script}"))
            .current_dir(&self.dir)
            .env("PATH", &self.path)
            // The README's commands without --api reach the default port, 7700: here, the
            // port that stands for it.
            .env("TIDINGS_API", format!("127.0.0.1:{}", self.ports[&7700]))
            .env_remove("TIDINGS_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        c
    }

    /// Runs a foreground command to the end; its output lines.
    fn run(&self, command: &str) -> Result<Vec<String>> {
        let mut child = self.bash(command).spawn()?;
        let lines = line_channel(child.stdout.take().context("stdout")?);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut out = Vec::new();
        loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => out.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    bail!("`{command}` did not finish within 60 s; printed {out:?}");
                }
            }
        }
        child.wait()?;
        Ok(out)
    }

    /// Starts a background command; its first `n` output lines.
    fn start(&mut self, command: &str, n: usize) -> Result<Vec<String>> {
        let mut child = self.bash(&format!("exec {command}")).spawn()?;
        let lines = line_channel(child.stdout.take().context("stdout")?);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut out = Vec::new();
        while out.len() < n {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => out.push(l),
                Err(_) => {
                    let _ = child.kill();
                    bail!("`{command} &` printed only {out:?}");
                }
            }
        }
        self.background.push((child, lines));
        Ok(out)
    }
}

/// Whether a command only reads (safe to run again).
fn read_only(command: &str) -> bool {
    let words: Vec<&str> = command.split_whitespace().collect();
    matches!(words.first(), Some(&"cat") | Some(&"curl"))
        || (words.first() == Some(&"tidings")
            && matches!(
                words.get(1),
                Some(&"status") | Some(&"get") | Some(&"heads")
            ))
}

/// Replaces every bound sample in `command` with its value; refuses unbound ones.
fn bind_command(command: &str, b: &Bindings) -> Result<String> {
    let mut out = String::new();
    for p in pieces(command) {
        match p {
            Piece::Text(t) => out.push_str(&t),
            Piece::Any => out.push('…'),
            Piece::Var(_, sample) => match b.get(&sample) {
                Some(v) => out.push_str(v),
                None => bail!("the README uses {sample} before any command printed it"),
            },
        }
    }
    Ok(out)
}

fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

#[test]
fn the_readme_tour_prints_what_the_readme_shows() -> Result<()> {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path)?;
    let steps = steps(&readme);
    ensure!(
        steps.len() >= 15,
        "only {} steps found in README.md",
        steps.len()
    );

    let tmp = tempfile::tempdir()?;
    let bin_dir = tidings_bin().parent().context("binary dir")?.to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut tour = Tour {
        dir: tmp.path().to_path_buf(),
        ports: PORTS.into_iter().zip(free_ports(PORTS.len())?).collect(),
        path,
        background: Vec::new(),
    };
    // "With the node from above running": `cargo run --release -- node`, on this run's ports,
    // in the directory the tour runs in (so its data is ./tidings-data there).
    let _node = NodeProcess::start_with_api(
        &tour.dir.join("tidings-data"),
        &format!("127.0.0.1:{}", tour.ports[&7700]),
        None,
        &[
            "--listen",
            &format!("/ip4/127.0.0.1/tcp/{}", tour.ports[&7800]),
        ],
    )?;

    let mut bindings = Bindings::new();
    for step in &steps {
        let command = bind_command(&tour.localise(&step.command), &bindings)
            .with_context(|| format!("README.md line {}", step.line))?;
        let expected: Vec<String> = step.expected.iter().map(|l| tour.localise(l)).collect();
        let (background, command) = match command.strip_suffix('&') {
            Some(c) => (true, c.trim_end().to_string()),
            None => (false, command),
        };
        let deadline = Instant::now() + RETRY_FOR;
        let got = loop {
            let out = if background {
                tour.start(&command, expected.len())?
            } else {
                tour.run(&command)?
            };
            if let Some(b) = match_lines(&expected, &out, &bindings) {
                bindings = b;
                break Ok(());
            }
            if background || !read_only(&command) || Instant::now() >= deadline {
                break Err(out);
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        if let Err(out) = got {
            bail!(
                "README.md line {}: `{}` printed\n{}\n\nbut the README shows\n{}",
                step.line,
                step.command,
                out.join("\n"),
                step.expected.join("\n")
            );
        }
    }
    Ok(())
}

#[test]
fn the_matcher_binds_samples_and_refuses_what_differs() {
    let b = Bindings::new();
    let cid_a = format!("bafyrei{}", "a".repeat(52));
    let cid_b = format!("bafyrei{}", "b".repeat(52));
    let one = |s: &String| vec![s.clone()];
    let got = match_lines(&one(&cid_a), &one(&cid_b), &b).expect("binds");
    assert_eq!(got.get(&cid_a), Some(&cid_b));
    // Bound: the same sample must print the same value again...
    assert!(match_lines(&[format!("x {cid_a}")], &[format!("x {cid_b}")], &got).is_some());
    assert!(match_lines(&one(&cid_a), &one(&cid_a), &got).is_none());
    // ...and another sample cannot take a value already bound.
    let cid_c = format!("bafyrei{}", "c".repeat(52));
    assert!(match_lines(&[cid_c], &[cid_b], &got).is_none());
    // Text must be equal; `…` matches any text, and a `…` line any lines.
    assert!(match_lines(&["in … s".into()], &["in 0.01 s".into()], &b).is_some());
    assert!(match_lines(&["in 1 s".into()], &["in 2 s".into()], &b).is_none());
    let lines: Vec<String> = ["a", "x", "y", "b"].map(String::from).to_vec();
    assert!(match_lines(&["a".into(), "…".into(), "b".into()], &lines, &b).is_some());
    assert!(match_lines(&["a".into(), "b".into()], &lines, &b).is_none());
    assert!(match_lines(&["a".into()], &lines, &b).is_none());
    // Times: 13 digits.
    assert!(match_lines(&["t 1796184086059".into()], &["t 1800000000000".into()], &b).is_some());
    assert!(match_lines(&["t 1796184086059".into()], &["t 18000".into()], &b).is_none());
}
