//! The web console (`GET /`): a single page whose files are compiled into the binary, so it
//! works offline and needs no build step. Its files are served without the bearer token (they
//! hold no data of the node); everything the page shows comes from the API, which asks for it.

use axum::Router as HttpRouter;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The console's files: (name, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/app.js"),
    ),
    (
        "dag.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/dag.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../console/style.css"),
    ),
];

/// The page may load and connect to this node only: nothing from elsewhere, no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /` and `GET /console/{file}`.
pub(super) fn routes() -> HttpRouter {
    HttpRouter::new()
        .route("/", get(|| async { serve("index.html") }))
        .route(
            "/console/{file}",
            get(|Path(file): Path<String>| async move { serve(&file) }),
        )
}

fn serve(name: &str) -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return super::ApiError::new(StatusCode::NOT_FOUND, format!("no console file {name:?}"))
            .into_response();
    };
    let mut resp = (*bytes).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The files change with the binary: revalidate rather than serve a stale page.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::ASSETS;

    #[test]
    fn every_file_the_page_names_is_embedded() {
        let index = std::str::from_utf8(ASSETS[0].2).unwrap_or_default();
        let app = std::str::from_utf8(ASSETS[1].2).unwrap_or_default();
        for (name, _, bytes) in ASSETS.iter().skip(1) {
            assert!(!bytes.is_empty(), "{name} is empty");
            let linked =
                index.contains(&format!("/console/{name}")) || app.contains(&format!("./{name}"));
            assert!(linked, "{name} is embedded but nothing loads it");
        }
        // Nothing is fetched from elsewhere: no absolute URLs in what the page loads.
        for (name, _, bytes) in ASSETS {
            let text = std::str::from_utf8(bytes)
                .unwrap_or_default()
                .replace("http://www.w3.org/2000/svg", ""); // a namespace name, never fetched
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{name} names a URL"
            );
        }
    }
}
