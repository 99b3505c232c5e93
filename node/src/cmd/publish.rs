//! `tidings pub`: one body from the argument or a file, or one body per line (JSON Lines) from
//! stdin or a file, published in order.

use std::collections::VecDeque;
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;
use tidings_node::client::Client;

/// Where the bodies come from.
#[derive(Debug)]
pub enum Input {
    /// One body, given as the argument.
    Arg(String),
    /// One body: a whole file (`-`: stdin).
    File(PathBuf),
    /// One body per line: of a file, or of stdin (`None`).
    Lines(Option<PathBuf>),
}

impl Input {
    /// From `tidings pub`'s arguments (clap has checked that exactly one source is given).
    pub fn from_args(json: Option<String>, file: Option<PathBuf>, jsonl: bool) -> Input {
        match (json, file, jsonl) {
            (Some(j), _, _) if j == "-" => Input::Lines(None),
            (_, file, true) => Input::Lines(file.filter(|f| f.as_os_str() != "-")),
            (_, Some(f), false) => Input::File(f),
            (Some(j), None, false) => Input::Arg(j),
            (None, None, false) => Input::Lines(None),
        }
    }
}

/// Publishes the bodies of `input` on `topic`, printing each CID on its own line.
pub async fn run(client: &Client, topic: &str, input: Input) -> Result<()> {
    match input {
        Input::Arg(json) => {
            let body: Value =
                serde_json::from_str(&json).context("the event body is not valid JSON")?;
            one(client, topic, &body).await
        }
        Input::File(path) => {
            let text = if path.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading stdin")?;
                s
            } else {
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?
            };
            let name = match path.to_str() {
                Some("-") => "stdin".to_string(),
                _ => path.display().to_string(),
            };
            let body: Value = serde_json::from_str(&text)
                .with_context(|| format!("{name} is not one valid JSON document"))?;
            one(client, topic, &body).await
        }
        Input::Lines(None) => lines(client, topic, std::io::stdin().lock(), "stdin").await,
        Input::Lines(Some(path)) => {
            let f = std::fs::File::open(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let name = path.display().to_string();
            lines(client, topic, std::io::BufReader::new(f), &name).await
        }
    }
}

async fn one(client: &Client, topic: &str, body: &Value) -> Result<()> {
    let r = client.publish(topic, body).await?;
    println!("{}", cid_of(&r));
    Ok(())
}

/// The CID in a publish's answer.
fn cid_of(answer: &Value) -> &str {
    answer
        .get("cid")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Lines published at once: a window like the peers' clients keep, so the node's group commit
/// takes many in one fsync instead of one round trip per line.
const WINDOW: usize = 256;

/// One body per line of `input`, in order, over the node's publish stream with up to
/// [`WINDOW`] in flight (the node stores one topic's publishes in the order they arrive, so the
/// author's events are numbered in line order). Each CID is printed as its line is answered, in
/// line order.
///
/// A line that is not JSON stops the reading there: the lines before it are published, none
/// after. A line the node refuses stops the reading too, but the lines already sent after it
/// (at most [`WINDOW`]) were published regardless: the error says how many, and their CIDs are
/// the last ones printed.
async fn lines(client: &Client, topic: &str, input: impl BufRead, name: &str) -> Result<()> {
    let stream = client
        .publish_stream()
        .await
        .context("opening the node's publish stream")?;
    let mut out = std::io::stdout().lock();
    let mut in_flight = VecDeque::new();
    let mut failed: Option<anyhow::Error> = None;
    let mut published_after = 0usize;
    let mut read = input.lines().enumerate();
    // Reading stops at the end of the input (a terminal is not read past its end) or at the
    // first failure.
    let mut reading = true;
    loop {
        if reading && failed.is_none() && in_flight.len() < WINDOW {
            let Some((i, line)) = read.next() else {
                reading = false;
                continue;
            };
            let n = i + 1;
            let sent = match line {
                Err(e) => Err(anyhow::Error::new(e).context(format!("reading {name}"))),
                Ok(line) if line.trim().is_empty() => continue,
                Ok(line) => match serde_json::from_str::<serde::de::IgnoredAny>(&line) {
                    Err(e) => Err(anyhow::Error::new(e).context(format!(
                        "{name} line {n}: not valid JSON; stopped here, earlier lines were published"
                    ))),
                    Ok(_) => stream
                        .send(topic, line.trim())
                        .await
                        .map_err(anyhow::Error::new),
                },
            };
            match sent {
                Ok(answer) => in_flight.push_back((n, answer)),
                Err(e) => failed = Some(e),
            }
            continue;
        }
        let Some((n, answer)) = in_flight.pop_front() else {
            break;
        };
        match answer.await {
            Ok(r) => {
                writeln!(out, "{}", cid_of(&r))?;
                out.flush()?;
                if failed.is_some() {
                    published_after += 1;
                }
            }
            Err(e) if failed.is_none() => {
                failed = Some(anyhow::Error::new(e).context(format!(
                    "{name} line {n}: stopped here, earlier lines were published"
                )));
            }
            // A later line failed too: the first failure is the one reported.
            Err(_) => {}
        }
    }
    match failed {
        None => Ok(()),
        Some(e) if published_after == 0 => Err(e),
        Some(e) => Err(e.context(format!(
            "{published_after} later line(s) already sent were published anyway: their CIDs are \
             the last {published_after} printed"
        ))),
    }
}
