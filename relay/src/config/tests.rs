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
        notification_log_bytes_max = 16777216
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
    assert_eq!(c.limits.notification_log_bytes_max, 16 << 20);
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
    c.limits.mesh_notifications_per_second_max = 0;
    assert_eq!(invalid_key(&c), "limits.mesh_notifications_per_second_max");
    let mut c = Config::default();
    c.sync.health_interval = 0;
    assert_eq!(invalid_key(&c), "sync.health_interval");
}

#[test]
fn the_notification_log_budget_fits_one_notification() {
    assert_eq!(
        Config::default().limits.notification_log_bytes_max,
        64 << 20,
        "the documented default"
    );
    let mut c = Config::default();
    c.limits.notification_log_bytes_max = 0;
    assert_eq!(invalid_key(&c), "limits.notification_log_bytes_max");
    c.limits.notification_log_bytes_max = (1 << 20) - 1;
    assert_eq!(invalid_key(&c), "limits.notification_log_bytes_max");
    c.limits.notification_log_bytes_max = 1 << 20;
    c.validate()
        .expect("1 MiB holds one notification of the default maximum size");
    c.limits.ws_message_bytes_max = 2 << 20;
    let err = c.validate().unwrap_err().to_string();
    assert!(
        err.contains("limits.notification_log_bytes_max") && err.contains("ws_message_bytes_max"),
        "{err}"
    );
}

#[test]
fn the_outbound_queue_holds_two_of_the_largest_messages() {
    assert_eq!(
        Config::default().limits.ws_outbound_queue_bytes_max,
        16 << 20
    );
    let mut c = Config::default();
    c.limits.ws_outbound_queue_bytes_max = 0;
    assert_eq!(invalid_key(&c), "limits.ws_outbound_queue_bytes_max");
    c.limits.ws_outbound_queue_bytes_max = (2 << 20) - 1;
    assert_eq!(invalid_key(&c), "limits.ws_outbound_queue_bytes_max");
    c.limits.ws_outbound_queue_bytes_max = 2 << 20;
    c.validate().expect("two messages of 1 MiB fit");
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

// Proves a relay with peers refuses to advertise an unspecified address (the default
// `ws_url` is one), and that without peers the defaults stay valid.
#[test]
fn peers_need_a_dialable_advertised_address() {
    Config::default()
        .validate()
        .expect("defaults without peers are valid");
    let mut c = Config::default();
    c.mesh.peers = vec!["a:8090".into()];
    assert_eq!(invalid_key(&c), "advertise_addr");
    let message = c.validate().unwrap_err().to_string();
    assert!(message.contains("--advertise-addr"), "{message}");
    for unspecified in ["0.0.0.0:9000", "[::]:9000"] {
        c.advertise_addr = Some(unspecified.into());
        assert_eq!(invalid_key(&c), "advertise_addr", "{unspecified}");
    }
    c.advertise_addr = None;
    c.ws_url = "[::]:8090".into();
    assert_eq!(invalid_key(&c), "advertise_addr");
    c.ws_url = "127.0.0.1:8090".into();
    c.validate().expect("a specific ws_url is advertised as is");
    c.ws_url = "0.0.0.0:8090".into();
    c.advertise_addr = Some("relay1.example:8090".into());
    c.validate().expect("an explicit advertised address");
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
fn ready_peers_min_defaults_to_zero_and_stays_within_peers_max() {
    let mut c = Config::default();
    assert_eq!(c.mesh.ready_peers_min, 0);
    c.mesh.peers_max = 4;
    c.mesh.ready_peers_min = 4;
    c.validate().expect("ready_peers_min == peers_max");
    c.mesh.ready_peers_min = 5;
    assert_eq!(invalid_key(&c), "mesh.ready_peers_min");
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
    std::fs::write(
        &path,
        "relay_id = \"from-file\"\nnetwork = \"mainnet\"\n[watcher]\nrequest_timeout_secs = 5\n",
    )
    .unwrap();
    let args = RunArgs {
        config: Some(path),
        relay_id: Some("from-flag".into()),
        peers: vec!["p:1".into()],
        advertise_addr: Some("relay.example:8090".into()),
        watcher_request_timeout_secs: Some(7),
        ..RunArgs::default()
    };
    let c = args.load().expect("loads");
    assert_eq!(c.watcher.request_timeout_secs, 7);
    assert_eq!(c.relay_id, "from-flag");
    assert_eq!(c.network, Network::Mainnet);
    assert_eq!(c.mesh.peers, ["p:1"]);
    std::fs::remove_dir_all(&dir).ok();
}

const SCAN_SECRET: &str = "5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c";
const SECRETS: [&str; 5] = [
    "ws-token-one-secret",
    "ws-token-two-secret",
    "http-basic-secret",
    "mesh-token-secret",
    "rpc-password-secret",
];

/// A valid configuration with every secret set.
fn with_every_secret() -> Config {
    let c = Config {
        auth: AuthConfig {
            ws_tokens: vec![SECRETS[0].into(), SECRETS[1].into()],
            http_basic_user: Some("operator".into()),
            http_basic_password: Some(SECRETS[2].into()),
            mesh_token: Some(SECRETS[3].into()),
        },
        bitcoin_core: Some(BitcoinCoreConfig {
            url: "http://bitcoin:8332".into(),
            wallet: None,
            rpc_user: Some("rpc".into()),
            rpc_password: Some(SECRETS[4].into()),
            cookie_file: None,
            ca_file: None,
        }),
        watcher: WatcherConfig {
            scan_secret_key: Some(SCAN_SECRET.into()),
            spend_public_key: Some(format!("02{}", "ab".repeat(32))),
            ..WatcherConfig::default()
        },
        ..Config::default()
    };
    c.validate().expect("valid");
    c
}

fn assert_no_secret(text: &str) {
    for secret in SECRETS.iter().chain([&SCAN_SECRET]) {
        assert!(!text.contains(secret), "{secret} shown in clear: {text}");
    }
}

// Proves Debug of the configuration and of each section holding a secret shows `***`,
// never a secret, and keeps what is not secret.
#[test]
fn debug_never_shows_a_secret() {
    let c = with_every_secret();
    let core = c.bitcoin_core.as_ref().unwrap();
    for text in [
        format!("{c:?}"),
        format!("{c:#?}"),
        format!("{:?}", c.auth),
        format!("{core:?}"),
        format!("{:?}", c.watcher),
    ] {
        assert_no_secret(&text);
        assert!(text.contains(crate::secret::REDACTED), "{text}");
    }
    let auth = format!("{:?}", c.auth);
    assert_eq!(auth.matches("\"***\"").count(), 4, "{auth}");
    assert!(auth.contains("operator"), "{auth}");
    assert!(format!("{core:?}").contains("http://bitcoin:8332"));
}

// Proves `redacted()` (what `check-config` and `GET /config` print) replaces each set
// secret by `***`, leaves unset ones unset, and changes nothing else.
#[test]
fn redacted_replaces_set_secrets_only() {
    let c = with_every_secret();
    let r = c.redacted();
    assert_eq!(r.auth.ws_tokens, ["***", "***"]);
    assert_eq!(r.auth.http_basic_password.as_deref(), Some("***"));
    assert_eq!(r.auth.mesh_token.as_deref(), Some("***"));
    assert_eq!(r.auth.http_basic_user.as_deref(), Some("operator"));
    assert_eq!(
        r.bitcoin_core.as_ref().unwrap().rpc_password.as_deref(),
        Some("***")
    );
    assert_eq!(r.watcher.scan_secret_key.as_deref(), Some("***"));
    assert_no_secret(&toml::to_string(&r).unwrap());
    let rest = Config {
        auth: c.auth.clone(),
        bitcoin_core: c.bitcoin_core.clone(),
        watcher: c.watcher.clone(),
        ..r.clone()
    };
    assert_eq!(rest, c, "only secrets change");
    let open = Config::default().redacted();
    assert!(open.auth.ws_tokens.is_empty());
    assert_eq!(open.auth.http_basic_password, None);
    assert_eq!(open.auth.mesh_token, None);
    assert_eq!(open.watcher.scan_secret_key, None);
    assert_eq!(open, Config::default());
}

#[test]
fn per_address_caps_and_short_timeouts_parse_default_and_validate() {
    let d = Limits::default();
    assert_eq!(
        (
            d.ws_connections_per_address_max,
            d.http_connections_per_address_max
        ),
        (100, 20)
    );
    assert_eq!((d.upgrade_timeout_secs, d.handshake_timeout_secs), (10, 10));
    assert_eq!(d.upgrade_timeout(), Duration::from_secs(10));
    let c = parse(
        "[limits]\nws_connections_per_address_max = 7\nhttp_connections_per_address_max = 3\n\
         upgrade_timeout_secs = 4\nhandshake_timeout_secs = 90\nconnection_timeout_secs = 60\n",
    )
    .expect("parses");
    c.validate().expect("valid");
    assert_eq!(c.limits.ws_connections_per_address_max, 7);
    assert_eq!(c.limits.http_connections_per_address_max, 3);
    assert_eq!(c.limits.upgrade_timeout(), Duration::from_secs(4));
    assert_eq!(
        c.limits.handshake_timeout(),
        Duration::from_secs(60),
        "never longer than the connection timeout"
    );
    for key in [
        "ws_connections_per_address_max",
        "http_connections_per_address_max",
        "upgrade_timeout_secs",
        "handshake_timeout_secs",
    ] {
        let c = parse(&format!("[limits]\n{key} = 0\n")).expect("parses");
        assert_eq!(invalid_key(&c), format!("limits.{key}"));
    }
}

/// `[tls]`, the mesh's TLS keys and https chain sources parse; certificate and key come
/// in pairs; mesh TLS needs this relay to serve TLS; `--tls-cert`/`--tls-key` set the
/// table's files; plaintext is the default.
#[test]
fn tls_keys_parse_pair_up_and_flags_set_them() {
    let c = Config::default();
    assert_eq!(c.tls.files(), None);
    assert_eq!(c.tls.reload_check_secs, 10);
    assert_eq!(c.limits.tls_handshake_timeout_secs, 10);
    assert!(!c.mesh.tls);

    let c = parse(
        r#"
        advertise_addr = "relay.example:8090"
        [tls]
        cert_file = "/etc/relay/cert.pem"
        key_file = "/etc/relay/key.pem"
        reload_check_secs = 0
        [mesh]
        peers = ["peer.example:8090"]
        tls = true
        ca_file = "/etc/relay/ca.pem"
        client_cert_file = "/etc/relay/client.pem"
        client_key_file = "/etc/relay/client.key"
        [limits]
        tls_handshake_timeout_secs = 3
        [bitcoin_core]
        url = "https://bitcoin.example/rpc"
        ca_file = "/etc/relay/core-ca.pem"
        [blindbit]
        url = "https://blindbit.example:8443"
        "#,
    )
    .expect("parses");
    c.validate().expect("valid");
    assert_eq!(
        c.tls.files(),
        Some((
            Path::new("/etc/relay/cert.pem"),
            Path::new("/etc/relay/key.pem")
        ))
    );
    assert_eq!(c.limits.tls_handshake_timeout(), Duration::from_secs(3));

    let mut half = c.clone();
    half.tls.key_file = None;
    assert_eq!(invalid_key(&half), "tls.key_file");
    let mut half = c.clone();
    half.mesh.client_key_file = None;
    assert_eq!(invalid_key(&half), "mesh.client_key_file");
    let mut plain = c.clone();
    plain.tls = TlsConfig::default();
    assert_eq!(invalid_key(&plain), "mesh.tls");
    let mut zero = c.clone();
    zero.limits.tls_handshake_timeout_secs = 0;
    assert_eq!(invalid_key(&zero), "limits.tls_handshake_timeout_secs");
    let mut ftp = c.clone();
    ftp.blindbit.as_mut().unwrap().url = "ftp://blindbit:1".into();
    assert_eq!(invalid_key(&ftp), "blindbit.url");

    let args = RunArgs {
        tls_cert: Some("/a/cert.pem".into()),
        tls_key: Some("/a/key.pem".into()),
        ..RunArgs::default()
    };
    let c = args.load().expect("loads");
    assert_eq!(
        c.tls.files(),
        Some((Path::new("/a/cert.pem"), Path::new("/a/key.pem")))
    );
}
