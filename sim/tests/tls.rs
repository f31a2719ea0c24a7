//! TLS on simulated sockets: the relay's TLS layer is generic over the `Net` stream, so
//! two relays on turmoil serve WSS/HTTPS and link over wss with a private CA, as on
//! tokio. (TLS draws randomness from the OS, so this test checks behaviour, not a
//! byte-identical trace.)

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use sdk_relay::config::Config;
use sdk_relay::conn::tls::{ClientTls, ServerTls};
use sdk_relay::logs::LogRing;
use sdk_relay::rt::Net as _;
use sim::rt::{TurmoilNet, env};

/// A CA and one leaf for `relay-1` and `relay-2`, as PEM files in `dir`: (CA, cert, key).
fn certificates(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "sim CA");
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["relay-1".into(), "relay-2".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_pem).unwrap();
    std::fs::write(&paths.1, leaf.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// `GET path` over HTTPS through the simulated network; the body.
async fn https_get(address: &str, path: &str, tls: &ClientTls) -> Option<String> {
    let stream = sdk_relay::conn::tls::dial(&TurmoilNet, address, Some(tls))
        .await
        .ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", address)
        .body(Empty::<Bytes>::new())
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some(String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn relays_serve_tls_and_link_over_wss_on_simulated_sockets() {
    let dir = std::env::temp_dir().join(format!("sim-tls-{}", std::process::id()));
    let (ca, cert, key) = certificates(&dir);
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(120))
        .build();
    for index in 1..=2usize {
        let name = format!("relay-{index}");
        let mut config = Config {
            relay_id: name.clone(),
            ws_url: "0.0.0.0:8090".into(),
            http_url: "0.0.0.0:8091".into(),
            advertise_addr: Some(format!("{name}:8090")),
            data_dir: dir.join(&name),
            ..Config::default()
        };
        config.sync.interval = 1;
        config.sync.health_interval = 2;
        config.tls.cert_file = Some(cert.clone());
        config.tls.key_file = Some(key.clone());
        config.mesh.tls = true;
        config.mesh.ca_file = Some(ca.clone());
        if index == 2 {
            config.mesh.peers = vec!["relay-1:8090".into()];
        }
        config.validate().expect("valid");
        sim.host(name.as_str(), move || {
            let config = config.clone();
            async move {
                let (cert, key) = config.tls.files().expect("TLS is on");
                let tls = ServerTls::load(cert, key, config.limits.tls_handshake_timeout())?;
                let listeners = sdk_relay::Listeners {
                    ws: TurmoilNet.bind(&config.ws_url).await?,
                    http: TurmoilNet.bind(&config.http_url).await?,
                    tls: Some(Arc::new(tls)),
                };
                let env = env(9, index, 0, sim::rt::DialLog::default(), Default::default());
                sdk_relay::run(
                    config,
                    env,
                    listeners,
                    LogRing::new(64),
                    std::future::pending(),
                )
                .await;
                Ok(())
            }
        });
    }
    let client_tls = ClientTls::new(Some(&ca), None).unwrap();
    sim.client("probe", async move {
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Some(body) = https_get("relay-1:8091", "/relays", &client_tls).await else {
                continue;
            };
            let view: serde_json::Value = serde_json::from_str(&body)?;
            let linked = view["relays"].as_array().is_some_and(|relays| {
                relays
                    .iter()
                    .any(|r| r["relay_id"] == "relay-2" && r["connected"] == true)
            });
            if linked {
                return Ok(());
            }
        }
        Err("relay-2 never linked to relay-1 over wss".into())
    });
    let result = sim.run();
    let _ = std::fs::remove_dir_all(&dir);
    result.expect("the simulation passes");
}
