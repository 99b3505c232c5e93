//! API addresses in the one form users type everywhere: `HOST:PORT` or `http://HOST:PORT`
//! (with or without a trailing `/`), for `tidings node --api` and for every client command.

use std::net::{SocketAddr, ToSocketAddrs};

/// Default API address of a local node.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:7700";

/// The `host:port` part of an API address in either form, or why it is not one.
fn host_port(s: &str) -> Result<&str, String> {
    let t = s.trim();
    let rest = match t.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "{t:?}: the API is plain HTTP; give HOST:PORT or http://HOST:PORT, not {scheme}://"
            ));
        }
        None => t,
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return Err(format!(
            "{t:?}: want HOST:PORT or http://HOST:PORT, like 127.0.0.1:7700"
        ));
    }
    Ok(rest)
}

/// Parses the address a node's API listens on: `HOST:PORT` or `http://HOST:PORT`. A host name
/// (`localhost:7700`) is resolved; port 0 lets the OS choose.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let hp = host_port(s)?;
    if let Ok(a) = hp.parse::<SocketAddr>() {
        return Ok(a);
    }
    let mut addrs = hp
        .to_socket_addrs()
        .map_err(|e| format!("{hp:?}: want HOST:PORT, like 127.0.0.1:7700 ({e})"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{hp:?}: the host name resolves to no address"))
}

/// The base URL clients use for an API address given as `HOST:PORT` or `http://HOST:PORT`:
/// `http://HOST:PORT`, without a trailing slash. A node listening on `0.0.0.0` (or `[::]`) is
/// reached on loopback.
pub fn client_url(s: &str) -> Result<String, String> {
    let hp = host_port(s)?;
    let (host, port) = hp.rsplit_once(':').ok_or_else(|| {
        format!("{hp:?}: the port is missing: want HOST:PORT, like 127.0.0.1:7700")
    })?;
    port.parse::<u16>()
        .map_err(|_| format!("{hp:?}: {port:?} is not a port number"))?;
    if host.is_empty() {
        return Err(format!("{hp:?}: the host is missing: want HOST:PORT"));
    }
    let host = match host {
        "0.0.0.0" => "127.0.0.1",
        "[::]" => "[::1]",
        h => h,
    };
    Ok(format!("http://{host}:{port}"))
}

/// The API URL of the node running on data directory `dir`, from its `api.addr`.
pub fn from_data_dir(dir: &std::path::Path) -> Result<String, String> {
    let file = dir.join(crate::node::API_ADDR_FILE);
    let text = std::fs::read_to_string(&file).map_err(|e| {
        format!(
            "cannot read {} ({e}): is a node running with --data {}?",
            file.display(),
            dir.display()
        )
    })?;
    client_url(text.trim()).map_err(|e| format!("{}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_are_taken_by_node_and_client_alike() {
        for s in [
            "127.0.0.1:7700",
            "http://127.0.0.1:7700",
            "http://127.0.0.1:7700/",
            " 127.0.0.1:7700 ",
        ] {
            assert_eq!(
                parse_listen(s),
                Ok("127.0.0.1:7700".parse().unwrap()),
                "{s}"
            );
            assert_eq!(client_url(s).as_deref(), Ok("http://127.0.0.1:7700"), "{s}");
        }
        assert_eq!(
            client_url("HTTP://[::1]:80").as_deref(),
            Ok("http://[::1]:80")
        );
        assert_eq!(client_url("0.0.0.0:9").as_deref(), Ok("http://127.0.0.1:9"));
        assert_eq!(
            client_url("localhost:7700").as_deref(),
            Ok("http://localhost:7700")
        );
        assert!(parse_listen("localhost:0").is_ok());
    }

    #[test]
    fn what_is_not_an_api_address_says_what_is() {
        for s in [
            "",
            "127.0.0.1",
            "https://127.0.0.1:7700",
            "http://127.0.0.1:7700/v1",
            "127.0.0.1:x",
            ":7700",
        ] {
            let e = client_url(s).expect_err(s);
            assert!(e.contains("HOST:PORT") || e.contains("port"), "{s}: {e}");
            assert!(parse_listen(s).is_err(), "{s}");
        }
    }
}
