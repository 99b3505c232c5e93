//! CORS, off unless the node is started with `--cors-origin`: browsers on the listed origins
//! may then call the API, and their preflight `OPTIONS` requests are answered (before the
//! token check: browsers send preflights without credentials).

use std::time::Duration;

use axum::Router as HttpRouter;
use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// A `--cors-origin` that is not an origin.
#[derive(Debug, thiserror::Error)]
#[error(
    "--cors-origin {0:?} is not an origin: want SCHEME://HOST[:PORT] (like https://app.example or http://localhost:3000), or '*' for any"
)]
pub struct CorsError(pub String);

/// Checks one origin: `*`, or `scheme://host[:port]` without a path.
fn origin(o: &str) -> Result<Option<HeaderValue>, CorsError> {
    if o == "*" {
        return Ok(None);
    }
    let bad = || CorsError(o.to_string());
    let (scheme, rest) = o.split_once("://").ok_or_else(bad)?;
    let host_ok = !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' '])
        && !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !host_ok {
        return Err(bad());
    }
    HeaderValue::from_str(o).map(Some).map_err(|_| bad())
}

/// `app` answering cross-origin requests from `origins` (`*`: any). No origins: `app` as is.
pub fn with_cors(app: HttpRouter, origins: &[String]) -> Result<HttpRouter, CorsError> {
    if origins.is_empty() {
        return Ok(app);
    }
    let mut list = Vec::new();
    let mut any = false;
    for o in origins {
        match origin(o.trim())? {
            Some(v) => list.push(v),
            None => any = true,
        }
    }
    let allow = if any {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(list)
    };
    let layer = CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
        ])
        .max_age(Duration::from_secs(3600));
    Ok(app.layer(layer))
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        for ok in [
            "*",
            "https://app.example",
            "http://localhost:3000",
            "http://[::1]:8080",
        ] {
            assert!(origin(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "app.example",
            "https://",
            "https://a.example/",
            "https://a.example/x",
            "http://a b",
        ] {
            assert!(origin(bad).is_err(), "{bad}");
        }
    }
}
