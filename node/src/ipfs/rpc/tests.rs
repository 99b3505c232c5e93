use super::*;

#[test]
fn api_addresses_in_every_form_users_give() {
    for (given, want) in [
        ("http://127.0.0.1:5001", "http://127.0.0.1:5001"),
        ("http://127.0.0.1:5001/", "http://127.0.0.1:5001"),
        ("http://127.0.0.1:5001/api/v0", "http://127.0.0.1:5001"),
        ("127.0.0.1:5001", "http://127.0.0.1:5001"),
        ("/ip4/127.0.0.1/tcp/5001", "http://127.0.0.1:5001"),
        ("/ip4/127.0.0.1/tcp/5001/http", "http://127.0.0.1:5001"),
        ("/dns4/ipfs/tcp/5001", "http://ipfs:5001"),
        ("/ip6/::1/tcp/5001", "http://[::1]:5001"),
    ] {
        assert_eq!(parse_api_url(given).as_deref(), Ok(want), "{given}");
    }
    for bad in [
        "",
        "https://127.0.0.1:5001",
        "127.0.0.1",
        "http://127.0.0.1:0",
        "http://127.0.0.1:port",
        "/ip4/127.0.0.1/udp/5001",
        "http://host:5001/other",
    ] {
        assert!(parse_api_url(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn a_multipart_boundary_never_occurs_in_the_data() {
    let tricky = b"--tidings-block-boundary-00000000 inside".to_vec();
    let (ct, body) = multipart(&tricky);
    let boundary = ct.split("boundary=").nth(1).expect("boundary");
    assert_ne!(boundary, "tidings-block-boundary-00000000");
    assert!(!contains(&tricky, boundary.as_bytes()));
    assert!(contains(&body, &tricky));
    assert!(body.ends_with(format!("\r\n--{boundary}--\r\n").as_bytes()));
}

#[test]
fn not_found_answers_are_told_from_failures() {
    assert!(not_found("context deadline exceeded"));
    assert!(not_found("Block was not found locally (offline)"));
    assert!(not_found("request timed out"));
    assert!(!not_found("invalid path"));
}

#[test]
fn codecs_block_put_can_be_told() {
    assert_eq!(codec_name(DAG_CBOR), Some("dag-cbor"));
    assert_eq!(codec_name(RAW), Some("raw"));
    assert_eq!(codec_name(0x55_55), None);
}
