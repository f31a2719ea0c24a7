//! The TLS layer against real rustls peers over in-memory streams, with certificates made
//! here (rcgen): a private CA and leaves it signs.

use std::path::PathBuf;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

/// A leaf for `localhost` and 127.0.0.1 signed by `ca`: (certificate PEM, key PEM).
fn leaf(ca: &Ca) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(test: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("sdk-relay-tls-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Files { dir }
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// One handshake between `server` and a client trusting `ca_file`; the leaf certificate
/// the client saw, or the client's and the server's errors.
async fn handshake(
    server: &ServerTls,
    client: &ClientTls,
) -> Result<CertificateDer<'static>, (String, HandshakeFailure)> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let (client_side, server_side) = tokio::join!(
        client.connect("localhost:1", client_io),
        server.accept(server_io)
    );
    match (client_side, server_side) {
        (Ok(mut client), Ok(mut server)) => {
            // Data flows both ways through the sessions.
            client.write_all(b"ping").await.unwrap();
            client.flush().await.unwrap();
            let mut buf = [0u8; 4];
            server.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            let seen = client.get_ref().1.peer_certificates().unwrap()[0].clone();
            Ok(seen.into_owned())
        }
        (client, server) => Err((
            client.err().map(|e| e.to_string()).unwrap_or_default(),
            server.expect_err("one side failed"),
        )),
    }
}

fn der_of(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A client trusting the CA completes a handshake and sees the served leaf; a reload
/// with a new leaf changes what new handshakes see; a reload with a bad file (garbage, a
/// key of another certificate) fails and keeps the leaf in force; `files_changed`
/// notices a rewrite once.
#[tokio::test]
async fn serves_reloads_and_keeps_the_old_certificate_on_a_bad_one() {
    let files = Files::new("reload");
    let authority = ca("test CA");
    let ca_file = files.write("ca.pem", &authority.pem);
    let (cert1, key1) = leaf(&authority);
    let cert_file = files.write("cert.pem", &cert1);
    let key_file = files.write("key.pem", &key1);
    let server = ServerTls::load(&cert_file, &key_file, TIMEOUT).unwrap();
    let client = ClientTls::new(Some(&ca_file), None).unwrap();
    assert_eq!(handshake(&server, &client).await.unwrap(), der_of(&cert1));
    assert!(!server.files_changed());

    let (cert2, key2) = leaf(&authority);
    files.write("cert.pem", &cert2);
    files.write("key.pem", &key2);
    assert!(server.files_changed());
    server.reload().unwrap();
    assert!(!server.files_changed(), "a load attempt records the files");
    assert_eq!(handshake(&server, &client).await.unwrap(), der_of(&cert2));

    files.write("cert.pem", "not a certificate\n");
    let error = server.reload().unwrap_err();
    assert!(error.to_string().contains("cert.pem"), "{error}");
    assert_eq!(handshake(&server, &client).await.unwrap(), der_of(&cert2));

    // A well-formed certificate whose key is another's is refused too.
    let (cert3, _) = leaf(&authority);
    files.write("cert.pem", &cert3);
    assert!(server.reload().is_err());
    assert_eq!(handshake(&server, &client).await.unwrap(), der_of(&cert2));
}

/// A client that trusts another CA refuses the certificate (counted as `certificate`);
/// bytes that are not TLS count as `protocol`; a client that says nothing is cut at the
/// handshake deadline (`timeout`); one that hangs up mid-handshake counts as `closed`.
#[tokio::test]
async fn failures_are_told_apart() {
    let files = Files::new("failures");
    let authority = ca("test CA");
    let (cert, key) = leaf(&authority);
    let server = ServerTls::load(
        &files.write("cert.pem", &cert),
        &files.write("key.pem", &key),
        Duration::from_millis(300),
    )
    .unwrap();

    let stranger =
        ClientTls::new(Some(&files.write("other.pem", &ca("other CA").pem)), None).unwrap();
    let (client_error, failure) = handshake(&server, &stranger).await.unwrap_err();
    assert!(client_error.contains("UnknownIssuer"), "{client_error}");
    assert_eq!(failure, HandshakeFailure::Certificate);

    let (mut client, server_io) = tokio::io::duplex(1024);
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(
        server.accept(server_io).await.unwrap_err(),
        HandshakeFailure::Protocol
    );

    let (_silent, server_io): (DuplexStream, _) = tokio::io::duplex(1024);
    assert_eq!(
        server.accept(server_io).await.unwrap_err(),
        HandshakeFailure::Timeout
    );

    let (client, server_io) = tokio::io::duplex(1024);
    drop(client);
    assert_eq!(
        server.accept(server_io).await.unwrap_err(),
        HandshakeFailure::Closed
    );
}

/// Files that cannot serve are refused at load with the file named: missing, no
/// certificate, a key that does not match.
#[test]
fn bad_files_are_refused_at_load() {
    let files = Files::new("load");
    let authority = ca("test CA");
    let (cert, key) = leaf(&authority);
    let (_, other_key) = leaf(&authority);
    let cert_file = files.write("cert.pem", &cert);
    let key_file = files.write("key.pem", &key);
    let missing = files.dir.join("missing.pem");
    let error = ServerTls::load(&missing, &key_file, TIMEOUT).unwrap_err();
    assert!(error.to_string().contains("missing.pem"), "{error}");
    let empty = files.write("empty.pem", "");
    let error = ServerTls::load(&empty, &key_file, TIMEOUT).unwrap_err();
    assert!(error.to_string().contains("no PEM certificate"), "{error}");
    let wrong = files.write("other-key.pem", &other_key);
    assert!(ServerTls::load(&cert_file, &wrong, TIMEOUT).is_err());
    assert!(ClientTls::new(Some(&empty), None).is_err());
    assert!(ServerTls::load(&cert_file, &key_file, TIMEOUT).is_ok());
}

/// Server names: host of host:port, bracketed IPv6, IP addresses.
#[test]
fn server_names_come_from_the_address() {
    assert_eq!(
        server_name("relay.example:443").unwrap(),
        ServerName::try_from("relay.example").unwrap()
    );
    assert_eq!(
        server_name("127.0.0.1:8090").unwrap(),
        ServerName::try_from("127.0.0.1").unwrap()
    );
    assert_eq!(
        server_name("[::1]:8090").unwrap(),
        ServerName::try_from("::1").unwrap()
    );
    assert!(server_name("bad name:1").is_err());
}

/// A client certificate, when configured, is presented: a server that requires one
/// (as a TLS-terminating proxy in front of peers may) sees it; without it the handshake
/// is refused.
#[tokio::test]
async fn a_configured_client_certificate_is_presented() {
    let files = Files::new("client-cert");
    let authority = ca("test CA");
    let ca_file = files.write("ca.pem", &authority.pem);
    let (server_cert, server_key) = leaf(&authority);
    let (client_cert, client_key) = leaf(&authority);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der_of(&authority.pem)).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(server_key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![der_of(&server_cert)], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let with_cert = ClientTls::new(
        Some(&ca_file),
        Some(ClientCert {
            cert_file: &files.write("client.pem", &client_cert),
            key_file: &files.write("client.key", &client_key),
        }),
    )
    .unwrap();
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let (client, server) = tokio::join!(
        with_cert.connect("localhost:1", client_io),
        acceptor.accept(server_io)
    );
    let server = server.expect("the server accepts the client certificate");
    assert_eq!(
        server.get_ref().1.peer_certificates().unwrap()[0],
        der_of(&client_cert)
    );
    drop(client);

    let without = ClientTls::new(Some(&ca_file), None).unwrap();
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let (_, server) = tokio::join!(
        without.connect("localhost:1", client_io),
        acceptor.accept(server_io)
    );
    assert!(server.is_err(), "no client certificate, no handshake");
}
