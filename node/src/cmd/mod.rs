//! The client commands: each talks to a node's API through [`tidings_node::client::Client`].

mod fetch;
mod publish;
mod status;
mod sub;

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tidings_node::client::ClientError;

use crate::cli::Command;

/// Runs a client command.
pub async fn run_client(command: Command) -> Result<()> {
    match command {
        Command::Node(_) => unreachable!("handled by main"),
        Command::Devnet(args) => crate::devnet::run(args).await,
        Command::Pub {
            topic,
            json,
            file,
            jsonl,
            client,
        } => {
            let input = publish::Input::from_args(json, file, jsonl);
            publish::run(&client.client()?, &topic, input).await
        }
        Command::Sub {
            filter,
            durable,
            since,
            from_start,
            count,
            no_reconnect,
            client,
        } => {
            let since = match (since, from_start) {
                (_, true) => Some(0),
                (Some(t), false) => Some(
                    tidings_node::age::since_ms(&t, tidings_node::age::now_ms())
                        .map_err(|e| anyhow::anyhow!("--since {e}"))?,
                ),
                (None, false) => None,
            };
            let args = sub::Args {
                filter,
                durable,
                since,
                count,
                reconnect: !no_reconnect,
            };
            sub::run(client.source()?, client.token.clone(), args).await
        }
        Command::UnsubDurable { name, client } => {
            client.client()?.delete_durable(&name).await?;
            eprintln!("deleted durable subscription {name}");
            Ok(())
        }
        Command::Get { cid, client } => match client.client()?.event(&cid).await {
            Ok(v) => print_json(&v),
            Err(ClientError::Api {
                status: 404,
                message,
            }) => bail!(
                "{message}: `tidings fetch {cid}` fetches it (and the history behind it) from the network"
            ),
            Err(e) => Err(e.into()),
        },
        Command::Heads { topic, client } => {
            let v = client.client()?.heads(&topic).await?;
            let heads = head_cids(&v);
            if heads.is_empty() {
                bail!("no events of {topic} on this node");
            }
            for h in heads {
                println!("{h}");
            }
            Ok(())
        }
        Command::Export {
            topic,
            output,
            client,
        } => {
            let client = client.client()?;
            // An empty CAR file is no use to anyone: say why there is nothing instead.
            let heads = client.heads(&topic).await?;
            if heads
                .get("heads")
                .and_then(Value::as_array)
                .is_none_or(|h| h.is_empty())
            {
                bail!("no events of {topic} on this node: nothing exported");
            }
            let car = client.export(&topic).await?;
            match output {
                Some(path) => std::fs::write(&path, &car)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => {
                    let mut out = std::io::stdout().lock();
                    if out.is_terminal() {
                        bail!(
                            "refusing to write a binary CAR file to a terminal: redirect stdout or use --output FILE"
                        );
                    }
                    out.write_all(&car)?;
                    out.flush()?;
                }
            }
            eprintln!("exported {} bytes of {topic}", car.len());
            Ok(())
        }
        Command::Import { file, client } => {
            let bytes = if file.as_os_str() == "-" {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
                b
            } else {
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
            };
            print_json(&client.client()?.import(bytes).await?)
        }
        Command::Status { json, client } => {
            let v = client.client()?.status().await?;
            if json {
                print_json(&v)
            } else {
                print!("{}", status::summary(&v));
                Ok(())
            }
        }
        Command::Fetch {
            cid,
            until,
            json,
            client,
        } => fetch::run(&client.client()?, &cid, &until, json).await,
        Command::Pin { topic, client } => {
            let v = client.client()?.pin(&topic).await?;
            let heads = head_cids(&v);
            for h in &heads {
                println!("{h}");
            }
            let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
            eprintln!(
                "pinned {topic} in IPFS: {} blocks, {} bytes, {} head(s)",
                n("blocks"),
                n("bytes"),
                heads.len()
            );
            Ok(())
        }
    }
}

/// Prints `v` as indented JSON.
pub fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// The `heads` of an API answer (`/v1/heads`, `/v1/ipfs/pin`) as CID strings.
fn head_cids(v: &Value) -> Vec<&str> {
    v.get("heads")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}
