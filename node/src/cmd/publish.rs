//! `tidings pub`: one body from the argument or a file, or one body per line (JSON Lines) from
//! stdin or a file, published in order.

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
    println!(
        "{}",
        r.get("cid").and_then(Value::as_str).unwrap_or_default()
    );
    Ok(())
}

/// One body per line of `input`, strictly one after another: the node numbers an author's
/// events in the order they arrive.
async fn lines(client: &Client, topic: &str, input: impl BufRead, name: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for (i, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("reading {name}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let body: Value = serde_json::from_str(&line).with_context(|| {
            format!(
                "{name} line {}: not valid JSON; stopped here, earlier lines were published",
                i + 1
            )
        })?;
        let r = client.publish(topic, &body).await.with_context(|| {
            format!(
                "{name} line {}: stopped here, earlier lines were published",
                i + 1
            )
        })?;
        writeln!(
            out,
            "{}",
            r.get("cid").and_then(Value::as_str).unwrap_or_default()
        )?;
        out.flush()?;
    }
    Ok(())
}
