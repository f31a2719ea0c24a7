use super::*;

fn parse(text: &str) -> Result<Config, String> {
    Config::from_toml_str(text)
}

fn invalid_key(config: &Config) -> String {
    match config.validate() {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid key, got {other:?}"),
    }
}

#[test]
fn defaults_are_the_specification_values() {
    let c = Config::default();
    c.validate().expect("defaults are valid");
    assert_eq!(c.relay_id, "relay-1");
    assert_eq!(c.ws_url, "0.0.0.0:8090");
    assert_eq!(c.http_url, "0.0.0.0:8091");
    assert_eq!(c.network, Network::Signet);
    assert_eq!((c.sync.interval, c.sync.health_interval), (30, 60));
    assert_eq!(c.limits.ws_connections_max, 1000);
    assert_eq!(c.limits.ws_message_bytes_max, 1_048_576);
    assert_eq!(c.limits.http_body_bytes_max, 10_485_760);
    assert_eq!(c.limits.ws_messages_per_second_max, 100);
    assert_eq!(c.limits.ws_messages_burst_max, 200);
    assert_eq!(c.advertised_addr(), "0.0.0.0:8090");
}

#[test]
fn every_documented_table_and_key_parses() {
    let c = parse(
        r#"
        relay_id = "relay-7"
        network = "regtest"
        ws_url = "127.0.0.1:9000"
        http_url = "127.0.0.1:9001"
        advertise_addr = "relay7.example:9000"
        data_dir = "/var/lib/sdk_relay"
        [sync]
        interval = 5
        health_interval = 10
        [mesh]
        peers = ["a:8090", "10.0.0.2:8090"]
        peers_max = 4
        [limits]
        ws_connections_max = 10
        ws_message_bytes_max = 2048
        heartbeat_interval_secs = 1
        connection_timeout_secs = 3
        ws_outbound_queue_max = 8
        ws_messages_per_second_max = 7
        ws_messages_burst_max = 9
        http_requests_per_minute_max = 5
        http_body_bytes_max = 100
        http_timeout_secs = 2
        http_connections_max = 3
        [auth]
        ws_tokens = ["t1"]
        http_basic_user = "admin"
        http_basic_password = "secret"
        mesh_token = "m"
        [bitcoin_core]
        url = "http://bitcoin:18443"
        wallet = "relay_wallet"
        rpc_user = "u"
        rpc_password = "p"
        [blindbit]
        url = "http://blindbit:8000"
        "#,
    )
    .expect("parses");
    c.validate().expect("valid");
    assert_eq!(c.mesh.peers, ["a:8090", "10.0.0.2:8090"]);
    assert_eq!(c.limits.http_connections_max, 3);
    assert_eq!(
        (
            c.limits.ws_messages_per_second_max,
            c.limits.ws_messages_burst_max
        ),
        (7, 9)
    );
    assert_eq!(
        c.bitcoin_core.unwrap().wallet.as_deref(),
        Some("relay_wallet")
    );
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let err = parse("relay_idd = \"x\"").unwrap_err();
    assert!(err.contains("relay_idd"), "{err}");
    let err = parse("[limits]\nws_connection_max = 3").unwrap_err();
    assert!(err.contains("ws_connection_max"), "{err}");
}

#[test]
fn zero_limits_name_their_key() {
    let mut c = Config::default();
    c.limits.ws_connections_max = 0;
    assert_eq!(invalid_key(&c), "limits.ws_connections_max");
    let mut c = Config::default();
    c.limits.ws_messages_per_second_max = 0;
    assert_eq!(invalid_key(&c), "limits.ws_messages_per_second_max");
    let mut c = Config::default();
    c.limits.ws_messages_burst_max = 0;
    assert_eq!(invalid_key(&c), "limits.ws_messages_burst_max");
    let mut c = Config::default();
    c.sync.health_interval = 0;
    assert_eq!(invalid_key(&c), "sync.health_interval");
}

#[test]
fn bad_addresses_name_their_key() {
    let c = Config {
        ws_url: "nonsense".into(),
        ..Config::default()
    };
    assert_eq!(invalid_key(&c), "ws_url");
    let mut c = Config::default();
    c.mesh.peers = vec!["a:8090".into(), "b:0".into()];
    assert_eq!(invalid_key(&c), "mesh.peers[1]");
    let c = Config {
        http_url: "host:99999".into(),
        ..Config::default()
    };
    assert_eq!(invalid_key(&c), "http_url");
    for ok in ["[::1]:80", "sdk_relay_1:8090", "127.0.0.1:0"] {
        validate_host_port("k", ok, true).expect(ok);
    }
}

#[test]
fn interval_ordering_is_enforced() {
    let mut c = Config::default();
    c.limits.heartbeat_interval_secs = 60;
    assert_eq!(invalid_key(&c), "limits.heartbeat_interval_secs");
    let mut c = Config::default();
    c.sync.interval = 61;
    assert_eq!(invalid_key(&c), "sync.interval");
}

#[test]
fn half_configured_basic_auth_is_refused() {
    let mut c = Config::default();
    c.auth.http_basic_user = Some("admin".into());
    assert_eq!(invalid_key(&c), "auth.http_basic_password");
}

#[test]
fn flags_override_the_file() {
    let dir = std::env::temp_dir().join(format!("sdk_relay_cfg_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("relay.toml");
    std::fs::write(&path, "relay_id = \"from-file\"\nnetwork = \"mainnet\"\n").unwrap();
    let args = RunArgs {
        config: Some(path),
        relay_id: Some("from-flag".into()),
        peers: vec!["p:1".into()],
        ..RunArgs::default()
    };
    let c = args.load().expect("loads");
    assert_eq!(c.relay_id, "from-flag");
    assert_eq!(c.network, Network::Mainnet);
    assert_eq!(c.mesh.peers, ["p:1"]);
    std::fs::remove_dir_all(&dir).ok();
}
