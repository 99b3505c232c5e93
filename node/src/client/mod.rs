//! The HTTP client the CLI commands use to talk to a node's API.

mod publish_stream;

pub use publish_stream::PublishStream;

use serde_json::Value;

/// Default API address of a local node.
pub const DEFAULT_API: &str = "http://127.0.0.1:7700";

/// Errors talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node answered with an error.
    #[error("{message} (HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The node's `{"error"}` text.
        message: String,
    },
    /// The node could not be reached or the answer was cut off.
    #[error(
        "cannot reach the node at {api} (is a node running? start one with `tidings node`, or point --api / TIDINGS_API at it)"
    )]
    Transport {
        /// The API URL.
        api: String,
        /// What went wrong.
        source: reqwest::Error,
    },
    /// A WebSocket to the node could not be opened.
    #[error(
        "cannot reach the node at {api}: {reason} (is a node running? start one with `tidings node`, or point --api / TIDINGS_API at it)"
    )]
    Unreachable {
        /// The API URL.
        api: String,
        /// What went wrong.
        reason: String,
    },
}

/// The node's reason in a refusal's body: its `{"error"}` text, else the body as it is.
fn error_message(body: String) -> String {
    serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or(body)
}

/// A subscription over WebSocket, as [`Client::subscribe_ws`] opens it.
pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a subscription asks for (the query of `GET /v1/subscribe`).
#[derive(Debug, Clone, Default)]
pub struct SubscribeAsk<'a> {
    /// The filter.
    pub filter: &'a str,
    /// A durable subscription's name.
    pub durable: Option<&'a str>,
    /// Replay stored events from this time (ms since the epoch; 0 = everything).
    pub since: Option<u64>,
    /// Resume after this event (`Last-Event-ID`).
    pub last_event_id: Option<&'a str>,
}

/// A client of one node's API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client for the API at `base` (e.g. `http://127.0.0.1:7700`).
    pub fn new(base: &str, token: Option<String>) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::new(),
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{}", self.base, path));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let transport = |source| ClientError::Transport {
            api: self.base.clone(),
            source,
        };
        let resp = r.send().await.map_err(transport)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.map_err(transport)?;
        let message = error_message(text);
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
        })
    }

    async fn json(&self, r: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let resp = self.send(r).await?;
        resp.json().await.map_err(|source| ClientError::Transport {
            api: self.base.clone(),
            source,
        })
    }

    async fn bytes(&self, r: reqwest::RequestBuilder) -> Result<Vec<u8>, ClientError> {
        let resp = self.send(r).await?;
        let b = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                api: self.base.clone(),
                source,
            })?;
        Ok(b.to_vec())
    }

    /// `POST /v1/publish`.
    pub async fn publish(&self, topic: &str, body: &Value) -> Result<Value, ClientError> {
        let payload = serde_json::json!({ "topic": topic, "body": body });
        self.json(
            self.req(reqwest::Method::POST, "/v1/publish")
                .json(&payload),
        )
        .await
    }

    /// `GET /v1/events/{cid}`.
    pub async fn event(&self, cid: &str) -> Result<Value, ClientError> {
        self.json(self.req(reqwest::Method::GET, &format!("/v1/events/{cid}")))
            .await
    }

    /// `GET /v1/blocks/{cid}`.
    pub async fn block(&self, cid: &str) -> Result<Vec<u8>, ClientError> {
        self.bytes(self.req(reqwest::Method::GET, &format!("/v1/blocks/{cid}")))
            .await
    }

    /// `GET /v1/heads?topic=`.
    pub async fn heads(&self, topic: &str) -> Result<Value, ClientError> {
        self.json(
            self.req(reqwest::Method::GET, "/v1/heads")
                .query(&[("topic", topic)]),
        )
        .await
    }

    /// `GET /v1/car?topic=`: the topic's stream as CAR v1 bytes.
    pub async fn export(&self, topic: &str) -> Result<Vec<u8>, ClientError> {
        self.bytes(
            self.req(reqwest::Method::GET, "/v1/car")
                .query(&[("topic", topic)]),
        )
        .await
    }

    /// `POST /v1/car`.
    pub async fn import(&self, car: Vec<u8>) -> Result<Value, ClientError> {
        self.json(
            self.req(reqwest::Method::POST, "/v1/car")
                .header("content-type", "application/vnd.ipld.car")
                .body(car),
        )
        .await
    }

    /// `GET /v1/subscribe?filter=` as Server-Sent Events: returns once the node has registered
    /// the subscription; read the response body as an SSE stream.
    /// `durable` names a durable subscription; `since` (ms since epoch, 0 = from the start)
    /// replays stored events first.
    pub async fn subscribe_sse(
        &self,
        filter: &str,
        durable: Option<&str>,
        since: Option<u64>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut q = vec![("filter", filter.to_string())];
        if let Some(d) = durable {
            q.push(("durable", d.to_string()));
        }
        if let Some(s) = since {
            q.push(("since", s.to_string()));
        }
        self.send(
            self.req(reqwest::Method::GET, "/v1/subscribe")
                .query(&q)
                .header("accept", "text/event-stream"),
        )
        .await
    }

    /// `GET /v1/subscribe` as a WebSocket: returns once the node has registered the
    /// subscription. Each text frame is one event's JSON; for a durable, send
    /// `{"ack": "<cid>"}` once an event is handled.
    pub async fn subscribe_ws(&self, ask: &SubscribeAsk<'_>) -> Result<WsStream, ClientError> {
        let mut q = vec![("filter", ask.filter.to_string())];
        if let Some(d) = ask.durable {
            q.push(("durable", d.to_string()));
        }
        if let Some(s) = ask.since {
            q.push(("since", s.to_string()));
        }
        self.websocket("/v1/subscribe", &q, ask.last_event_id).await
    }

    /// `GET /v1/publish` as a WebSocket: a [`PublishStream`], many publishes in flight on one
    /// connection, each answered when it is acknowledged.
    pub async fn publish_stream(&self) -> Result<PublishStream, ClientError> {
        let ws = self.websocket("/v1/publish", &[], None).await?;
        Ok(PublishStream::start(ws, self.base.clone()))
    }

    /// Opens a WebSocket to `path?query` with the token (and a `Last-Event-ID`, if given);
    /// a refusal is the node's `{"error"}` with its status.
    async fn websocket(
        &self,
        path: &str,
        query: &[(&str, String)],
        last_event_id: Option<&str>,
    ) -> Result<WsStream, ClientError> {
        use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, http};
        let unreachable = |reason: String| ClientError::Unreachable {
            api: self.base.clone(),
            reason,
        };
        let ws_base = match self.base.strip_prefix("http://") {
            Some(rest) => format!("ws://{rest}"),
            None => match self.base.strip_prefix("https://") {
                Some(rest) => format!("wss://{rest}"),
                None => self.base.clone(),
            },
        };
        let url = reqwest::Url::parse_with_params(&format!("{ws_base}{path}"), query)
            .map_err(|e| unreachable(format!("bad URL: {e}")))?;
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| unreachable(e.to_string()))?;
        let headers = req.headers_mut();
        if let Some(t) = &self.token
            && let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {t}"))
        {
            headers.insert(http::header::AUTHORIZATION, v);
        }
        if let Some(id) = last_event_id
            && let Ok(v) = http::HeaderValue::from_str(id)
        {
            headers.insert("last-event-id", v);
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let text = resp
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err(ClientError::Api {
                    status,
                    message: error_message(text),
                })
            }
            Err(e) => Err(unreachable(e.to_string())),
        }
    }

    /// `DELETE /v1/durable/{name}`.
    pub async fn delete_durable(&self, name: &str) -> Result<(), ClientError> {
        self.send(self.req(reqwest::Method::DELETE, &format!("/v1/durable/{name}")))
            .await
            .map(|_| ())
    }

    /// `POST /v1/fetch`: returns once the node has started; read the body as JSON lines
    /// (`{"progress"}` while it runs, then `{"done"}` or `{"error"}`).
    pub async fn fetch(
        &self,
        cid: &str,
        until: &[String],
    ) -> Result<reqwest::Response, ClientError> {
        self.send(
            self.req(reqwest::Method::POST, "/v1/fetch")
                .json(&serde_json::json!({ "cid": cid, "until": until })),
        )
        .await
    }

    /// `POST /v1/ipfs/pin`: the topic's stream imported into the node's IPFS backend and its
    /// heads pinned.
    pub async fn pin(&self, topic: &str) -> Result<Value, ClientError> {
        self.json(
            self.req(reqwest::Method::POST, "/v1/ipfs/pin")
                .json(&serde_json::json!({ "topic": topic })),
        )
        .await
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Value, ClientError> {
        self.json(self.req(reqwest::Method::GET, "/v1/status"))
            .await
    }
}
