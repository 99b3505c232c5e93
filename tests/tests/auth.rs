//! `--token` on every route of the API: each is a 401 without the token and does its work with
//! it, a real WebSocket handshake and a real SSE request included; and the CLI sends
//! `TIDINGS_TOKEN`. (hostile_clients.rs tries malformed tokens on a few routes; this walks them
//! all, both ways.)

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use reqwest::Method;
use serde_json::{Value, json};
use tidings_tests::{NodeProcess, poll, tidings_bin};
use tungstenite::client::IntoClientRequest;

const TOKEN: &str = "every-route-t0ken";
const TOPIC: &str = "/auth/t";

/// Every route of the API with a request that succeeds when authorised: (method, path, body,
/// the status it must then answer).
fn routes(cid: &str, car: &[u8]) -> Vec<(Method, String, Vec<u8>, u16)> {
    let topic = "%2Fauth%2Ft";
    vec![
        (
            Method::POST,
            "/v1/publish".into(),
            json!({"topic": TOPIC, "body": {"n": 2}})
                .to_string()
                .into_bytes(),
            200,
        ),
        (Method::GET, format!("/v1/events/{cid}"), vec![], 200),
        (Method::GET, format!("/v1/blocks/{cid}"), vec![], 200),
        (Method::GET, format!("/v1/heads?topic={topic}"), vec![], 200),
        (Method::GET, format!("/v1/car?topic={topic}"), vec![], 200),
        (Method::POST, "/v1/car".into(), car.to_vec(), 200),
        (
            Method::POST,
            "/v1/fetch".into(),
            json!({"cid": cid}).to_string().into_bytes(),
            200,
        ),
        (Method::GET, "/v1/status".into(), vec![], 200),
        (Method::GET, "/metrics".into(), vec![], 200),
        // Last: the durable the WebSocket below opened.
        (Method::DELETE, "/v1/durable/authd".into(), vec![], 204),
    ]
}

#[test]
fn every_route_is_refused_without_the_token_and_works_with_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start_with_api(&dir.path().join("n"), "127.0.0.1:0", Some(TOKEN), &[])?;
    let bare = node.api();
    let authed = node.api().with_token(TOKEN);
    let (code, first) = authed.publish(TOPIC, &json!({"n": 1}))?;
    ensure!(code == 200, "publish with the token: {code} {first}");
    let cid = first["cid"].as_str().context("cid")?.to_string();
    let car = authed
        .request(Method::GET, "/v1/car?topic=%2Fauth%2Ft")
        .send()?
        .bytes()?
        .to_vec();

    // A real WebSocket handshake: refused without the token...
    let ws_url = format!(
        "{}/v1/subscribe?filter=%2Fauth%2F**&durable=authd",
        bare.base().replace("http://", "ws://")
    );
    match tungstenite::connect(ws_url.as_str()) {
        Err(tungstenite::Error::Http(r)) => {
            ensure!(r.status() == 401, "WebSocket without token: {}", r.status())
        }
        Err(e) => bail!("WebSocket without token: {e}"),
        Ok(_) => bail!("WebSocket without token: the handshake succeeded"),
    }
    // ...accepted with it, and events arrive on it.
    let mut req = ws_url.as_str().into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse()?);
    let (mut ws, resp) = tungstenite::connect(req).context("WebSocket with the token")?;
    ensure!(resp.status() == 101, "WebSocket upgrade: {}", resp.status());
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
    }
    // A subscription takes effect a moment after its answer: publish until one arrives.
    let got = poll(Duration::from_secs(20), || {
        let (c, v) = authed.publish(TOPIC, &json!({"ws": true})).ok()?;
        let cid = (c == 200).then(|| v["cid"].as_str().map(str::to_string))??;
        loop {
            match ws.read() {
                Ok(tungstenite::Message::Text(t)) if t.contains(&cid) => return Some(cid),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    });
    ensure!(got.is_some(), "no event over the authorised WebSocket");
    ws.close(None)?;
    drop(ws);

    // A real SSE request: refused without the token, a stream of events with it.
    let sse = reqwest::Url::parse(&format!("{}/v1/subscribe?filter=%2Fauth%2F**", bare.base()))?;
    let refused = tidings_tests::sse_subscribe_with(&sse, None);
    ensure!(
        refused
            .as_ref()
            .err()
            .is_some_and(|e| e.to_string().contains("401")),
        "SSE without token: {:?}",
        refused.map(|_| ())
    );
    let (_sock, rx) = tidings_tests::sse_subscribe_with(&sse, Some(TOKEN))?;
    let got = poll(Duration::from_secs(20), || {
        let (c, v) = authed.publish(TOPIC, &json!({"sse": true})).ok()?;
        let cid = (c == 200).then(|| v["cid"].as_str().map(str::to_string))??;
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if line.contains(&cid) {
                return Some(());
            }
        }
        None
    });
    ensure!(got.is_some(), "no event over the authorised SSE stream");

    // The ordinary routes, each both ways.
    for (method, path, body, want) in routes(&cid, &car) {
        let r = bare
            .request(method.clone(), &path)
            .body(body.clone())
            .send()?;
        let code = r.status().as_u16();
        ensure!(code == 401, "{method} {path} without token: {code}");
        let r = authed.request(method.clone(), &path).body(body).send()?;
        let code = r.status().as_u16();
        let text = r.text()?;
        ensure!(
            code == want,
            "{method} {path} with the token: {code}, want {want}: {text}"
        );
    }
    // A path that does not exist is refused before it is looked up: no probing without it.
    let code = bare.request(Method::GET, "/v1/nope").send()?.status();
    ensure!(code == 401, "unknown path without token: {code}");

    // The CLI: TIDINGS_TOKEN is sent (a publish and a status work), and without it they fail
    // saying why.
    let api = bare.base().to_string();
    for args in [
        vec!["pub", TOPIC, r#"{"cli": true}"#],
        vec!["status", "--json"],
    ] {
        let run = |token: Option<&str>| -> Result<(bool, String)> {
            let mut cmd = std::process::Command::new(tidings_bin());
            cmd.args(&args)
                .env("TIDINGS_API", &api)
                .env_remove("TIDINGS_TOKEN");
            if let Some(t) = token {
                cmd.env("TIDINGS_TOKEN", t);
            }
            let out = cmd.output()?;
            Ok((
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ))
        };
        let (ok, text) = run(Some(TOKEN))?;
        ensure!(ok, "tidings {args:?} with TIDINGS_TOKEN: {text}");
        let (ok, text) = run(None)?;
        ensure!(
            !ok && text.contains("token"),
            "tidings {args:?} without TIDINGS_TOKEN: {text}"
        );
    }
    let heads: Value = authed
        .request(Method::GET, "/v1/heads?topic=%2Fauth%2Ft")
        .send()?
        .json()?;
    let (_, last) = authed.get_json(&format!(
        "/v1/events/{}",
        heads["heads"][0].as_str().context("head")?
    ))?;
    ensure!(
        last["body"]["cli"] == json!(true),
        "the CLI's publish is not the head: {last}"
    );
    Ok(())
}
