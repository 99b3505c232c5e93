//! A small client of an IPFS node's HTTP RPC (`/api/v0`), on the HTTP stack the node already
//! uses (reqwest), with the few calls tidings needs: `block/put`, `block/get`, `dag/export`,
//! `dag/import`, `pin/add` and `version`.
//!
//! Written here rather than taken from `ipfs-api-backend-hyper`: every version of that crate's
//! `core2` dependency is yanked, so it no longer resolves on a fresh lock, and it would pull
//! hyper 0.14 and an old multihash beside the ones the node uses.
//!
//! Both RPC dialects are spoken: js-ipfs 0.66 (core 0.18) reads `block/put?format=dag-cbor&
//! mhtype=sha2-256&version=1` and silently answers a dag-pb CID when given kubo's newer
//! `cid-codec=dag-cbor`; kubo reads `cid-codec`. So a put checks the CID IPFS answers against
//! the block's own, tries the other spelling when they differ, and remembers what worked.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde::Deserialize;
use tidings_ipld_schema::{Cid, DAG_CBOR, MAX_BLOCK_SIZE, RAW};

use super::car_stream::CarStream;

/// How long a connection attempt may take: IPFS is usually on this machine or next to it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest silence while reading an answer (a stalled IPFS, or a streamed export waiting for a
/// block IPFS does not hold and is looking for on its network).
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `block/put` or other small request, end to end.
const SMALL_REQUEST: Duration = Duration::from_secs(15);
/// Longest answer to a call whose answer is a little JSON (a wrong server could send anything).
const MAX_JSON_ANSWER: usize = 1 << 20;

/// A `dag/export` answer being read.
pub struct Export {
    body: std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    car: CarStream,
    done: bool,
}

impl Export {
    /// The next block (its CID as IPFS sent it, and its bytes: neither checked yet), `None` at
    /// the end of the export.
    pub async fn next(&mut self) -> Option<Result<(Cid, Vec<u8>), RpcError>> {
        if self.done {
            return None;
        }
        loop {
            match self.car.next_block() {
                Ok(Some(block)) => return Some(Ok(block)),
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(RpcError::Garbage(format!("dag/export: {e}"))));
                }
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.car.push(&chunk),
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(unreachable(e)));
                }
                None => {
                    self.done = true;
                    return self
                        .car
                        .finish()
                        .err()
                        .map(|e| Err(RpcError::Garbage(format!("dag/export: {e}"))));
                }
            }
        }
    }
}

/// The dag-pb codec (multicodec 0x70).
const DAG_PB: u64 = 0x70;
/// The dag-json codec (multicodec 0x0129).
const DAG_JSON: u64 = 0x0129;

/// Why an RPC call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// No answer: connection refused or reset, or too slow.
    #[error("cannot reach IPFS: {0}")]
    Unreachable(String),
    /// IPFS answered with an error status.
    #[error("IPFS answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// IPFS's `Message`, or the start of the body.
        message: String,
    },
    /// IPFS answered something that is not what the call returns.
    #[error("IPFS answered garbage: {0}")]
    Garbage(String),
    /// IPFS stored the block under another CID than its own (another codec or hash).
    #[error("IPFS stored block {ours} as {answered}, with either spelling of block/put")]
    WrongCid {
        /// The block's CID.
        ours: Cid,
        /// The CID IPFS answered.
        answered: String,
    },
    /// A block whose codec IPFS's `block/put` cannot be told.
    #[error("block {0}: its codec cannot be given to block/put")]
    Unsupported(Cid),
}

impl RpcError {
    /// A short name of the kind of failure (the `reason` label of the error metric).
    pub fn kind(&self) -> &'static str {
        match self {
            RpcError::Unreachable(_) => "unreachable",
            RpcError::Status { .. } => "status",
            RpcError::Garbage(_) | RpcError::WrongCid { .. } => "garbage",
            RpcError::Unsupported(_) => "unsupported",
        }
    }

    /// Whether IPFS could not be reached at all (as opposed to answering badly).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RpcError::Unreachable(_))
    }
}

/// The two ways to name a block's codec to `block/put`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutSpelling {
    /// `format=<codec>&mhtype=sha2-256&version=1` (js-ipfs, older kubo).
    Format,
    /// `cid-codec=<codec>&mhtype=sha2-256` (kubo 0.13 and later).
    CidCodec,
}

impl PutSpelling {
    fn other(self) -> PutSpelling {
        match self {
            PutSpelling::Format => PutSpelling::CidCodec,
            PutSpelling::CidCodec => PutSpelling::Format,
        }
    }

    /// The query parameter that names the codec.
    pub fn as_str(self) -> &'static str {
        match self {
            PutSpelling::Format => "format",
            PutSpelling::CidCodec => "cid-codec",
        }
    }
}

/// Where an IPFS node's RPC is, parsed from what a user gives.
///
/// Accepts `http://HOST:PORT` (with or without `/api/v0`), `HOST:PORT`, or the multiaddr IPFS
/// prints and keeps in `Addresses.API` (`/ip4/127.0.0.1/tcp/5001`, `/dns4/ipfs/tcp/5001/http`).
pub fn parse_api_url(s: &str) -> Result<String, String> {
    let t = s.trim();
    let hint = "want http://HOST:PORT or a multiaddr like /ip4/127.0.0.1/tcp/5001";
    if t.is_empty() {
        return Err(format!("the IPFS API address is empty: {hint}"));
    }
    let host_port = if t.starts_with('/') {
        let parts: Vec<&str> = t.trim_end_matches('/').split('/').skip(1).collect();
        match parts.as_slice() {
            [proto, host, "tcp", port, rest @ ..]
                if matches!(*proto, "ip4" | "ip6" | "dns" | "dns4" | "dns6")
                    && matches!(rest, [] | ["http"]) =>
            {
                if *proto == "ip6" {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                }
            }
            _ => return Err(format!("{t:?}: not an HTTP multiaddr: {hint}")),
        }
    } else {
        let rest = match t.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "{t:?}: only plain http:// is supported for the IPFS RPC, not {scheme}:// \
                     (the RPC is an admin interface: keep it on loopback or a private network)"
                ));
            }
            None => t,
        };
        let rest = rest.trim_end_matches('/');
        let rest = rest.strip_suffix("/api/v0").unwrap_or(rest);
        if rest.contains('/') || rest.is_empty() {
            return Err(format!("{t:?}: {hint}"));
        }
        rest.to_string()
    };
    let (host, port) = host_port
        .rsplit_once(':')
        .ok_or_else(|| format!("{t:?}: the port is missing: {hint}"))?;
    if host.is_empty() {
        return Err(format!("{t:?}: the host is missing: {hint}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("{t:?}: {port:?} is not a port number")),
    }
    Ok(format!("http://{host_port}"))
}

/// The client.
#[derive(Debug)]
pub struct Rpc {
    base: String,
    http: reqwest::Client,
    /// The `block/put` spelling that last gave the right CID: 0 none yet, 1 format, 2 cid-codec.
    spelling: AtomicU8,
}

/// A `block/put` answer.
#[derive(Deserialize)]
struct PutAnswer {
    #[serde(rename = "Key")]
    key: String,
}

/// An error answer.
#[derive(Deserialize)]
struct ErrorAnswer {
    #[serde(rename = "Message")]
    message: String,
}

/// A `version` answer.
#[derive(Deserialize)]
struct VersionAnswer {
    #[serde(rename = "Version")]
    version: String,
}

/// A `pin/add` answer.
#[derive(Deserialize)]
struct PinAnswer {
    #[serde(rename = "Pins")]
    pins: Vec<String>,
}

/// One line of a `dag/import` answer.
#[derive(Deserialize)]
struct ImportLine {
    #[serde(rename = "Root")]
    root: Option<ImportRoot>,
}

#[derive(Deserialize)]
struct ImportRoot {
    #[serde(rename = "Cid")]
    cid: CidLink,
    #[serde(rename = "PinErrorMsg", default)]
    pin_error: String,
}

/// A CID as IPFS writes it in JSON: `{"/": "bafy..."}`.
#[derive(Deserialize)]
struct CidLink {
    #[serde(rename = "/")]
    cid: String,
}

/// A root of an imported CAR as IPFS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedRoot {
    /// The root.
    pub cid: Cid,
    /// Why pinning it failed; `None` when it is pinned.
    pub pin_error: Option<String>,
}

impl Rpc {
    /// A client of the RPC at `base` (as [`parse_api_url`] returns it).
    pub fn new(base: &str) -> Result<Rpc, RpcError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            // The RPC is local: a proxy from the environment would only get in the way.
            .no_proxy()
            .tcp_nodelay(true)
            .build()
            .map_err(|e| RpcError::Unreachable(format!("cannot build the HTTP client: {e}")))?;
        Ok(Rpc {
            base: base.trim_end_matches('/').to_string(),
            http,
            spelling: AtomicU8::new(0),
        })
    }

    /// The RPC's base URL (`http://HOST:PORT`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The `block/put` spelling that last gave the right CID, if one did yet.
    pub fn spelling(&self) -> Option<PutSpelling> {
        match self.spelling.load(Ordering::Relaxed) {
            1 => Some(PutSpelling::Format),
            2 => Some(PutSpelling::CidCodec),
            _ => None,
        }
    }

    fn url(&self, call: &str) -> String {
        format!("{}/api/v0/{call}", self.base)
    }

    /// Sends a request; a non-2xx answer is an [`RpcError::Status`].
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, RpcError> {
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = read_limited(resp, MAX_JSON_ANSWER)
            .await
            .unwrap_or_default();
        let message = serde_json::from_slice::<ErrorAnswer>(&body)
            .map(|e| e.message)
            .unwrap_or_else(|_| snippet(&body));
        Err(RpcError::Status {
            status: status.as_u16(),
            message,
        })
    }

    /// `version`: the IPFS implementation's version (a cheap liveness probe).
    pub async fn version(&self) -> Result<String, RpcError> {
        let resp = self
            .send(self.http.post(self.url("version")).timeout(SMALL_REQUEST))
            .await?;
        let v: VersionAnswer = json_answer(resp).await?;
        Ok(v.version)
    }

    /// `block/put`: stores `data` in IPFS and checks that IPFS addresses it by `cid`.
    pub async fn block_put(&self, cid: &Cid, data: &[u8]) -> Result<(), RpcError> {
        let codec = codec_name(cid.codec()).ok_or(RpcError::Unsupported(*cid))?;
        let first = self.spelling().unwrap_or(PutSpelling::Format);
        let mut last = None;
        for spelling in [first, first.other()] {
            match self.put_once(spelling, codec, cid, data).await {
                Ok(()) => {
                    let code = match spelling {
                        PutSpelling::Format => 1,
                        PutSpelling::CidCodec => 2,
                    };
                    self.spelling.store(code, Ordering::Relaxed);
                    return Ok(());
                }
                // Unreachable or slow: the other spelling would fare no better.
                Err(e @ RpcError::Unreachable(_)) => return Err(e),
                // A wrong CID, or a refused option: the other spelling may be the one.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(RpcError::Unsupported(*cid)))
    }

    async fn put_once(
        &self,
        spelling: PutSpelling,
        codec: &str,
        cid: &Cid,
        data: &[u8],
    ) -> Result<(), RpcError> {
        let query: &[(&str, &str)] = match spelling {
            PutSpelling::Format => &[("format", codec), ("mhtype", "sha2-256"), ("version", "1")],
            PutSpelling::CidCodec => &[("cid-codec", codec), ("mhtype", "sha2-256")],
        };
        let (content_type, body) = multipart(data);
        let resp = self
            .send(
                self.http
                    .post(self.url("block/put"))
                    .query(query)
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(body)
                    .timeout(SMALL_REQUEST),
            )
            .await?;
        let answer: PutAnswer = json_answer(resp).await?;
        match Cid::try_from(answer.key.as_str()) {
            Ok(answered) if answered == *cid => Ok(()),
            Ok(_) => Err(RpcError::WrongCid {
                ours: *cid,
                answered: answer.key,
            }),
            Err(e) => Err(RpcError::Garbage(format!(
                "block/put answered {:?}, not a CID: {e}",
                answer.key
            ))),
        }
    }

    /// `block/get`: the bytes IPFS holds under `cid`, or `None` when it has not found them
    /// within `wait` (IPFS looks on its network for blocks it does not hold). The bytes are
    /// not checked here: callers verify them as they verify any peer's.
    pub async fn block_get(&self, cid: &Cid, wait: Duration) -> Result<Option<Vec<u8>>, RpcError> {
        let arg = cid.to_string();
        let timeout = format!("{}ms", wait.as_millis());
        let req = self
            .http
            .post(self.url("block/get"))
            .query(&[("arg", arg.as_str()), ("timeout", timeout.as_str())])
            // IPFS gives up first and says so; past this it is stalled.
            .timeout(wait + Duration::from_secs(2));
        match self.send(req).await {
            Ok(resp) => {
                let data = read_limited(resp, MAX_BLOCK_SIZE + 1).await?;
                if data.len() > MAX_BLOCK_SIZE {
                    return Err(RpcError::Garbage(format!(
                        "block/get {cid} answered more than {MAX_BLOCK_SIZE} bytes"
                    )));
                }
                Ok(Some(data))
            }
            Err(RpcError::Status { message, .. }) if not_found(&message) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `dag/export`: the DAG under `root` as IPFS walks it (each block after the one that
    /// links it), read block by block as it streams in with [`Export::next`]. The stream ends
    /// with an error when IPFS stops answering for a while (a block it does not hold and looks
    /// for on its network); what came before stands.
    pub async fn dag_export(&self, root: &Cid) -> Result<Export, RpcError> {
        let arg = root.to_string();
        let resp = self
            .send(
                self.http
                    .post(self.url("dag/export"))
                    .query(&[("arg", arg.as_str())]),
            )
            .await?;
        Ok(Export {
            body: Box::pin(resp.bytes_stream()),
            car: CarStream::default(),
            done: false,
        })
    }

    /// `dag/import` with `pin-roots`: stores every block of the CAR `car` in IPFS and pins its
    /// roots (recursively: all they link to). Answers each root and whether it was pinned.
    pub async fn dag_import(
        &self,
        car: Vec<u8>,
        wait: Duration,
    ) -> Result<Vec<ImportedRoot>, RpcError> {
        let (content_type, body) = multipart(&car);
        let resp = self
            .send(
                self.http
                    .post(self.url("dag/import"))
                    .query(&[("pin-roots", "true")])
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(body)
                    .timeout(wait),
            )
            .await?;
        let text = read_limited(resp, MAX_JSON_ANSWER).await?;
        let mut roots = Vec::new();
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let line: ImportLine = serde_json::from_slice(line).map_err(|e| {
                RpcError::Garbage(format!("dag/import answered {}: {e}", snippet(line)))
            })?;
            let Some(root) = line.root else { continue };
            let cid = Cid::try_from(root.cid.cid.as_str()).map_err(|e| {
                RpcError::Garbage(format!("dag/import named root {:?}: {e}", root.cid.cid))
            })?;
            roots.push(ImportedRoot {
                cid,
                pin_error: (!root.pin_error.is_empty()).then_some(root.pin_error),
            });
        }
        Ok(roots)
    }

    /// `pin/add` (recursive): pins `cid` and everything it links to, which IPFS must hold or
    /// find within `wait`.
    pub async fn pin_add(&self, cid: &Cid, wait: Duration) -> Result<(), RpcError> {
        let arg = cid.to_string();
        let timeout = format!("{}ms", wait.as_millis());
        let resp = self
            .send(
                self.http
                    .post(self.url("pin/add"))
                    .query(&[
                        ("arg", arg.as_str()),
                        ("recursive", "true"),
                        ("timeout", timeout.as_str()),
                    ])
                    .timeout(wait + SMALL_REQUEST),
            )
            .await?;
        let answer: PinAnswer = json_answer(resp).await?;
        // js-ipfs names the pin in base58btc (`zdpu...`): compare CIDs, not strings.
        if answer
            .pins
            .iter()
            .any(|p| Cid::try_from(p.as_str()).is_ok_and(|c| c == *cid))
        {
            Ok(())
        } else {
            Err(RpcError::Garbage(format!(
                "pin/add {cid} answered pins {:?}",
                answer.pins
            )))
        }
    }
}

/// The name `block/put` knows a codec by.
fn codec_name(codec: u64) -> Option<&'static str> {
    match codec {
        DAG_CBOR => Some("dag-cbor"),
        RAW => Some("raw"),
        DAG_PB => Some("dag-pb"),
        DAG_JSON => Some("dag-json"),
        _ => None,
    }
}

/// Whether an error message of `block/get` means "not found in time" rather than a failure.
fn not_found(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "timed out",
        "timeout",
        "deadline exceeded",
        "not found",
        "aborted",
    ]
    .iter()
    .any(|s| m.contains(s))
}

/// A `multipart/form-data` body with `data` as its one file part (what every IPFS RPC call
/// that takes data reads), and its content type.
fn multipart(data: &[u8]) -> (String, Vec<u8>) {
    // A boundary that does not occur in the data, as the format requires.
    let mut n = 0u32;
    let boundary = loop {
        let b = format!("tidings-block-boundary-{n:08x}");
        if !contains(data, b.as_bytes()) {
            break b;
        }
        n += 1;
    };
    let mut body = Vec::with_capacity(data.len() + 200);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"block\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn unreachable(e: reqwest::Error) -> RpcError {
    let what = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // reqwest's own text is terse ("error sending request"): add its source chain.
    let mut why = format!("{what}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        why.push_str(&format!(": {s}"));
        source = s.source();
    }
    RpcError::Unreachable(why)
}

/// The body, at most `limit` bytes (one more tells the caller it was over).
async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, RpcError> {
    let mut out = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(unreachable)?;
        let room = (limit + 1).saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() > limit {
            break;
        }
    }
    Ok(out)
}

async fn json_answer<T: for<'de> Deserialize<'de>>(resp: reqwest::Response) -> Result<T, RpcError> {
    let body = read_limited(resp, MAX_JSON_ANSWER).await?;
    serde_json::from_slice(&body)
        .map_err(|e| RpcError::Garbage(format!("{} ({e})", snippet(&body))))
}

/// The start of a body, for messages.
fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let s = s.trim();
    if s.is_empty() {
        "an empty body".to_string()
    } else {
        format!("{s:?}")
    }
}

#[cfg(test)]
mod tests;
