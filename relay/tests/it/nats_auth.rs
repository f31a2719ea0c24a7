//! NATS mode against a real `nats-server` that requires credentials or TLS: with the
//! right ones the relay connects and is healthy; with wrong ones it stays degraded and
//! says why (`/sync/status` errors, its log). One short test per kind of credential:
//! user/password, token, nkey, TLS with a private CA.

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use crate::nats::FAST;
use crate::support::cluster::{RelayProcess, eventually};
use crate::support::nats::NatsCluster;
use crate::support::tls::Pki;

/// A relay on the cluster's server with `credentials` (lines of `[backbone]`).
async fn relay(id: &str, cluster: &NatsCluster, credentials: &str) -> RelayProcess {
    let extra = format!(
        "{FAST}[backbone]\nkind = \"nats\"\nurls = [\"{}\"]\npublish_timeout_secs = 3\n{credentials}",
        cluster.servers[0].url()
    );
    RelayProcess::start(id, "", &extra).await
}

/// The relay with the right credentials becomes healthy (connected, the stream takes its
/// publications, it reads the bucket); the one with wrong credentials stays degraded, not
/// ready, and its `/sync/status` errors name `refusal`.
async fn right_ones_connect_wrong_ones_are_refused(
    cluster: &NatsCluster,
    good: &str,
    bad: &str,
    refusal: &str,
) {
    let accepted = relay("good", cluster, good).await;
    let refused = relay("bad", cluster, bad).await;
    eventually(
        Duration::from_secs(30),
        "the relay with the right credentials healthy",
        || async { (accepted.get("/health").await["status"] == "healthy").then_some(()) },
    )
    .await;
    let errors = eventually(
        Duration::from_secs(30),
        "the relay with wrong credentials reports the refusal",
        || async {
            let status = refused.get("/sync/status").await;
            let text = status["errors"].to_string().to_lowercase();
            text.contains(refusal).then_some(text)
        },
    )
    .await;
    let health = refused.get("/health").await;
    assert_eq!(health["status"], "degraded", "{health} {errors}");
    let ready = refused.get("/health/ready").await;
    assert_eq!(ready["status"], "not_ready", "{ready}");
    assert!(
        refused.log().to_lowercase().contains(refusal),
        "the log says why:\n{}",
        refused.log()
    );
    let status = accepted.get("/sync/status").await;
    assert_eq!(status["status"], "syncing", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_user_and_password() {
    let cluster =
        NatsCluster::single_with("authorization {\n  user: relay\n  password: \"s3cret-pw\"\n}\n")
            .await;
    right_ones_connect_wrong_ones_are_refused(
        &cluster,
        "user = \"relay\"\npassword = \"s3cret-pw\"\n",
        "user = \"relay\"\npassword = \"wrong-pw\"\n",
        "authorization violation",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_token() {
    let cluster =
        NatsCluster::single_with("authorization {\n  token: \"t0ken-for-relays\"\n}\n").await;
    right_ones_connect_wrong_ones_are_refused(
        &cluster,
        "token = \"t0ken-for-relays\"\n",
        "token = \"not-the-token\"\n",
        "authorization violation",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_nkey() {
    let allowed = nkeys::KeyPair::new_user();
    let stranger = nkeys::KeyPair::new_user();
    let cluster = NatsCluster::single_with(&format!(
        "authorization {{\n  users = [ {{ nkey: {} }} ]\n}}\n",
        allowed.public_key()
    ))
    .await;
    let seed_file = |name: &str, pair: &nkeys::KeyPair| {
        let path = cluster.dir().join(name);
        std::fs::write(&path, pair.seed().unwrap()).unwrap();
        format!("nkey_file = \"{}\"\n", path.display())
    };
    let good = seed_file("allowed.nk", &allowed);
    let bad = seed_file("stranger.nk", &stranger);
    right_ones_connect_wrong_ones_are_refused(&cluster, &good, &bad, "authorization violation")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_tls_with_a_private_ca() {
    let pki = Pki::new("nats");
    let other_ca = Pki::new("nats-other");
    let server = pki.leaf("nats-server");
    let cluster = NatsCluster::single_with(&format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  timeout: 5\n}}\n",
        server.cert_file.display(),
        server.key_file.display()
    ))
    .await;
    right_ones_connect_wrong_ones_are_refused(
        &cluster,
        &format!("ca_file = \"{}\"\n", pki.ca_file.display()),
        &format!("ca_file = \"{}\"\n", other_ca.ca_file.display()),
        "unknownissuer",
    )
    .await;
}
