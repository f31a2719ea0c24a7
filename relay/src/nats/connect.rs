//! Connecting to NATS and making sure the stream and the membership bucket exist.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use crate::config::BackboneConfig;

/// The bound on establishing one connection to a server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pings find a dead server within about two intervals.
const PING_INTERVAL: Duration = Duration::from_secs(2);
/// Reconnect attempts back off up to this.
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(2);
/// Window in which the stream drops a repeated `Nats-Msg-Id` (the server's default).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Largest stored notification: the peer protocol's own bound.
const STREAM_MESSAGE_BYTES_MAX: i32 = 4 << 20;
/// Largest relay record the bucket stores.
const RECORD_BYTES_MAX: i32 = 64 * 1024;

/// The subjects of one stream: `<stream>.n.<notification type>`.
pub fn subjects(stream: &str) -> String {
    format!("{stream}.n.>")
}

/// The subject of one notification type. Types that are not a single NATS token (dots,
/// spaces, wildcards) are hex-encoded, so any type is a valid, distinct subject.
pub fn subject(stream: &str, notification_type: &str) -> String {
    let plain = !notification_type.is_empty()
        && notification_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        format!("{stream}.n.{notification_type}")
    } else {
        format!("{stream}.n.x{}", hex::encode(notification_type))
    }
}

/// A NATS-safe token for a relay id (consumer names, bucket keys).
pub fn token(relay_id: &str) -> String {
    relay_id
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                char::from(b).to_string()
            } else {
                format!("={b:02x}")
            }
        })
        .collect()
}

/// A client that reconnects by itself, forever, to any server of the cluster; it
/// returns at once even if no server answers yet (the relay starts degraded). Every
/// connection event (a refused login, a TLS failure, a disconnection) goes to `on_event`.
pub async fn client(
    config: &BackboneConfig,
    relay_id: &str,
    on_event: impl Fn(async_nats::Event) + Send + Sync + 'static,
) -> anyhow::Result<async_nats::Client> {
    let on_event = std::sync::Arc::new(on_event);
    let options = options(config, relay_id)
        .await?
        .event_callback(move |event| {
            on_event(event);
            std::future::ready(())
        })
        .ping_interval(PING_INTERVAL)
        .request_timeout(Some(Duration::from_secs(config.publish_timeout_secs)))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            RECONNECT_DELAY_MAX.min(Duration::from_millis(100) * attempts.min(20) as u32)
        });
    Ok(options.connect(config.urls.as_slice()).await?)
}

/// One connection attempt with the relay's options, to say why connecting fails: the
/// reconnecting client's events name only the kind of failure ("IO error"), this names
/// its cause (a certificate from an unknown issuer, a refused login). `None` when it
/// connects.
pub async fn diagnose(config: &BackboneConfig, relay_id: &str) -> Option<String> {
    let options = match options(config, relay_id).await {
        Ok(options) => options,
        Err(error) => return Some(format!("{error:#}")),
    };
    let attempt = options.connect(config.urls.as_slice());
    match tokio::time::timeout(CONNECT_TIMEOUT * 2, attempt).await {
        Ok(Ok(client)) => {
            drop(client);
            None
        }
        Ok(Err(error)) => Some(error_chain(&error)),
        Err(_) => Some("connecting timed out".into()),
    }
}

/// An error and its causes, `: `-separated.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Who the relay is to the servers: name, credentials, TLS.
async fn options(
    config: &BackboneConfig,
    relay_id: &str,
) -> anyhow::Result<async_nats::ConnectOptions> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("sdk_relay {relay_id}"))
        .connection_timeout(CONNECT_TIMEOUT);
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let Some(path) = &config.creds_file {
        options = options.credentials_file(path).await?;
    }
    if let Some(path) = &config.nkey_file {
        let seed = std::fs::read_to_string(path)?;
        options = options.nkey(seed.trim().to_string());
    }
    if let Some(path) = &config.ca_file {
        options = options
            .add_root_certificates(path.clone())
            .require_tls(true);
    }
    Ok(options)
}

/// The stream every relay publishes to, created when missing.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &BackboneConfig,
) -> anyhow::Result<stream::Stream> {
    let stream = js
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec![subjects(&config.stream)],
            max_age: Duration::from_secs(config.max_age_secs),
            duplicate_window: DUPLICATE_WINDOW.min(Duration::from_secs(config.max_age_secs)),
            num_replicas: config.replicas,
            max_message_size: STREAM_MESSAGE_BYTES_MAX,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    Ok(stream)
}

/// The bucket of relay records; a record not renewed within `ttl` disappears.
///
/// The bucket's stream is created here with the key-value layout rather than through
/// `create_key_value`, which first reads the account info in a shape nats-server 2.9
/// does not answer.
pub async fn ensure_bucket(
    js: &jetstream::Context,
    config: &BackboneConfig,
    ttl: Duration,
) -> anyhow::Result<kv::Store> {
    let bucket = format!("{}_relays", config.stream);
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age: ttl,
        duplicate_window: DUPLICATE_WINDOW.min(ttl),
        max_message_size: RECORD_BYTES_MAX,
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        ..Default::default()
    })
    .await?;
    Ok(js.get_key_value(bucket).await?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_type_maps_to_one_valid_subject() {
        assert_eq!(super::subject("S", "payment"), "S.n.payment");
        let odd = super::subject("S", "a.b *>");
        assert_eq!(odd, format!("S.n.x{}", hex::encode("a.b *>")));
        assert!(!odd["S.n.".len()..].contains(['.', ' ', '*', '>']));
        assert_ne!(super::subject("S", "x61"), super::subject("S", "a"));
        assert_eq!(super::token("relay.1"), "relay=2e1");
    }
}
