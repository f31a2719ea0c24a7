use super::*;

#[test]
fn the_specification_handshake_parses() {
    let text = r#"{"type":"handshake","client_id":"my-client","version":"1.0.0","capabilities":["sync","notifications"]}"#;
    let ClientMessage::Handshake(h) = parse_client_message(text).unwrap() else {
        panic!("handshake")
    };
    assert_eq!(h.client_id, "my-client");
    assert!(h.capabilities.contains(Capability::Sync));
    assert!(h.capabilities.contains(Capability::Notifications));
    assert!(!h.capabilities.contains(Capability::Publish));
    assert_eq!(h.token, None);
}

// Proves a handshake's token (a credential) shows as `***` in Debug, and parses intact.
#[test]
fn handshake_debug_hides_the_token() {
    let text = r#"{"type":"handshake","client_id":"c","token":"hs-secret-token"}"#;
    let message = parse_client_message(text).unwrap();
    let shown = format!("{message:?}");
    assert!(
        !shown.contains("hs-secret-token") && shown.contains("***"),
        "{shown}"
    );
    let ClientMessage::Handshake(h) = message else {
        panic!("handshake")
    };
    assert_eq!(h.token.as_deref(), Some("hs-secret-token"));
}

#[test]
fn unknown_capabilities_are_ignored_not_granted() {
    let text = r#"{"type":"handshake","client_id":"c","capabilities":["root","publish"]}"#;
    let ClientMessage::Handshake(h) = parse_client_message(text).unwrap() else {
        panic!()
    };
    assert_eq!(
        h.capabilities.iter().collect::<Vec<_>>(),
        [Capability::Publish]
    );
}

#[test]
fn errors_are_classified() {
    assert_eq!(
        parse_client_message("{not json").unwrap_err().code(),
        "malformed_json"
    );
    assert_eq!(
        parse_client_message(r#"{"type":"launch"}"#)
            .unwrap_err()
            .code(),
        "unknown_type"
    );
    assert_eq!(
        parse_client_message(r#"{"kind":"ping"}"#)
            .unwrap_err()
            .code(),
        "invalid_message"
    );
    assert_eq!(
        parse_client_message(r#"[1,2]"#).unwrap_err().code(),
        "invalid_message"
    );
    assert_eq!(
        parse_client_message(r#"{"type":"handshake"}"#)
            .unwrap_err()
            .code(),
        "invalid_message"
    );
    assert_eq!(
        parse_client_message(r#"{"type":"subscribe","notification_types":[]}"#)
            .unwrap_err()
            .code(),
        "invalid_message"
    );
    assert_eq!(
        parse_client_message(r#"{"type":"notification","notification_type":"x"}"#)
            .unwrap_err()
            .code(),
        "invalid_message"
    );
}

#[test]
fn publish_keeps_data_raw() {
    let text = r#"{"type":"notification","notification_type":"payment_detected","data":{"amount":"0.001", "n":[1, 2]}}"#;
    let ClientMessage::Publish(p) = parse_client_message(text).unwrap() else {
        panic!()
    };
    assert_eq!(p.data.get(), r#"{"amount":"0.001", "n":[1, 2]}"#);
}

#[test]
fn ping_echoes_its_id() {
    let ClientMessage::Ping { id } = parse_client_message(r#"{"type":"ping","id":42}"#).unwrap()
    else {
        panic!()
    };
    let pong: serde_json::Value = serde_json::from_slice(&encode_pong(id, 7)).unwrap();
    assert_eq!(
        pong,
        serde_json::json!({"type":"pong","id":42,"timestamp":7})
    );
}

/// `encode_pong` writes by hand what serde_json would write for the same fields.
#[test]
fn pongs_are_what_serde_json_writes() {
    #[derive(serde::Serialize)]
    struct Pong<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a serde_json::value::RawValue>,
        timestamp: u64,
    }
    let big = format!("\"{}\"", "x".repeat(70_000));
    let ids = [
        None,
        Some("42"),
        Some(r#""a\"b""#),
        Some(r#"{"k":[1,2,{"n":null}]}"#),
        Some(big.as_str()),
    ];
    for id in ids {
        let raw = id.map(|id| serde_json::value::RawValue::from_string(id.into()).unwrap());
        for timestamp in [0, 7, 10, 1_764_500_000, u64::MAX] {
            let want = serde_json::to_vec(&Pong {
                kind: "pong",
                id: raw.as_deref(),
                timestamp,
            })
            .unwrap();
            let got = encode_pong(
                raw.as_deref().map(serde_json::value::RawValue::get),
                timestamp,
            );
            assert_eq!(got, want, "id {id:?}, timestamp {timestamp}");
        }
    }
}

#[test]
fn notification_frame_has_the_specification_shape() {
    let n = Notification {
        topic: String::new(),
        message_id: "relay-1:1:1".into(),
        relay_id: "relay-1".into(),
        notification_type: "payment_detected".into(),
        data: serde_json::value::RawValue::from_string(r#"{"txid":"abc"}"#.into()).unwrap(),
        timestamp: 1703001600,
        signature: String::new(),
    };
    let v: serde_json::Value = serde_json::from_slice(&n.encode()).unwrap();
    assert_eq!(v["type"], "notification");
    assert_eq!(v["notification_type"], "payment_detected");
    assert_eq!(v["data"]["txid"], "abc");
    assert_eq!(v["timestamp"], 1703001600);
    assert_eq!(v["message_id"], "relay-1:1:1");
}

#[test]
fn handshake_response_and_health_have_the_documented_fields() {
    let mut granted = Capabilities::default();
    granted.insert(Capability::Sync);
    let v: serde_json::Value =
        serde_json::from_slice(&encode_handshake_accepted("relay-1", granted, 30, 5)).unwrap();
    assert_eq!(v["type"], "handshake_response");
    assert_eq!(v["status"], "accepted");
    assert_eq!(v["capabilities"], serde_json::json!(["sync"]));
    assert_eq!(v["heartbeat_interval"], 30);
    let report = HealthReport {
        status: "healthy",
        uptime: 3600,
        memory_usage: "128MB".into(),
        cpu_usage: "5%".into(),
        connections: 10,
    };
    let v: serde_json::Value = serde_json::from_slice(&encode_health(&report, 9)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"type":"health","status":"healthy","metrics":{"uptime":3600,"memory_usage":"128MB","cpu_usage":"5%","connections":10},"timestamp":9})
    );
}

fn publish_with_data(data: &str) -> String {
    format!(r#"{{"type":"notification","notification_type":"t","data":{data}}}"#)
}

#[test]
fn data_nested_to_the_limit_is_accepted_one_deeper_is_invalid() {
    let at = format!(
        "{}{}",
        "[".repeat(DATA_DEPTH_MAX),
        "]".repeat(DATA_DEPTH_MAX)
    );
    let text = publish_with_data(&at);
    let ClientMessage::Publish(p) = parse_client_message(&text).unwrap() else {
        panic!("publish")
    };
    assert_eq!(p.data.get(), at);

    let over = format!(
        "{}{}",
        "[".repeat(DATA_DEPTH_MAX + 1),
        "]".repeat(DATA_DEPTH_MAX + 1)
    );
    let error = parse_client_message(&publish_with_data(&over)).unwrap_err();
    assert_eq!(error.code(), error_code::INVALID_MESSAGE);
    assert!(
        error
            .to_string()
            .contains(&format!("{DATA_DEPTH_MAX} levels")),
        "{error}"
    );
}

#[test]
fn a_500000_deep_data_is_refused_without_recursing() {
    // serde_json skips a RawValue without recursion and without a depth limit: the bound
    // is ours. Run on a small stack, so any recursion would overflow it.
    let deep = format!("{}1{}", "{\"a\":".repeat(500_000), "}".repeat(500_000));
    let text = publish_with_data(&deep);
    let code = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || parse_client_message(&text).unwrap_err().code())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(code, error_code::INVALID_MESSAGE);
}

#[test]
fn a_deep_ping_id_is_invalid() {
    let id = format!(
        "{}{}",
        "[".repeat(DATA_DEPTH_MAX + 1),
        "]".repeat(DATA_DEPTH_MAX + 1)
    );
    let text = format!(r#"{{"type":"ping","id":{id}}}"#);
    assert_eq!(
        parse_client_message(&text).unwrap_err().code(),
        error_code::INVALID_MESSAGE
    );
}

// Proves names reserved for private topics cannot be subscribed to nor published from the
// wallet protocol, and that peers' notifications carry only well-formed wallet topics.
#[test]
fn private_topics_are_refused_from_wallets_and_checked_from_peers() {
    let topic = format!("wallet:{}", "0f".repeat(16));
    assert!(crate::protocol::is_wallet_topic(&topic));
    for bad in [
        "wallet:",
        "wallet:0F0F",
        &format!("wallet:{}", "0F".repeat(16)),
    ] {
        assert!(!crate::protocol::is_wallet_topic(bad), "{bad}");
    }
    let subscribe = format!(r#"{{"type":"subscribe","notification_types":["a","{topic}"]}}"#);
    let error = parse_client_message(&subscribe).unwrap_err().to_string();
    assert!(error.contains("private topics"), "{error}");
    let publish = format!(r#"{{"type":"notification","notification_type":"{topic}","data":{{}}}}"#);
    assert!(parse_client_message(&publish).is_err());
    let unsubscribe = format!(r#"{{"type":"unsubscribe","notification_types":["{topic}"]}}"#);
    assert!(parse_client_message(&unsubscribe).is_ok());

    let peer = |topic: &str| {
        format!(
            r#"{{"type":"notification","message_id":"r-00000001-1","relay_id":"r","notification_type":"payment_detected","data":{{}},"timestamp":1,"topic":"{topic}"}}"#
        )
    };
    let parsed = |text: &str| match crate::protocol::peer::parse(text.as_bytes()) {
        Ok(crate::protocol::peer::PeerMessage::Notification(n)) => n,
        other => panic!("{other:?}"),
    };
    let n = parsed(&peer(&topic));
    assert_eq!(n.topic, topic);
    assert!(crate::protocol::peer::notification_fits(&n).is_ok());
    assert!(
        n.encode()
            .windows(topic.len())
            .any(|w| w == topic.as_bytes())
    );
    let wrong = parsed(&peer(&"x".repeat(60_000)));
    assert!(crate::protocol::peer::notification_fits(&wrong).is_err());
}
