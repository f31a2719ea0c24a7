//! Certificates made in tests (rcgen): a private CA and leaves for `localhost` and
//! 127.0.0.1 that it signs, written as PEM files in a directory of their own.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A private CA and the directory its files go to (removed on drop).
pub struct Pki {
    issuer: Issuer<'static, KeyPair>,
    pub dir: PathBuf,
    /// The CA certificate, PEM: what clients trust (`--cacert`, `ca_file`).
    pub ca_file: PathBuf,
}

/// A leaf certificate: its files and its DER bytes (to recognise it on the wire).
pub struct Leaf {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub der: Vec<u8>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("sdk_relay_pki_{name}_{}_{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, params.self_signed(&key).unwrap().pem()).unwrap();
        Pki {
            issuer: Issuer::new(params, key),
            dir,
            ca_file,
        }
    }

    /// A new leaf for `localhost` and 127.0.0.1, written as `<name>.pem` and
    /// `<name>.key` (overwriting files of that name).
    pub fn leaf(&self, name: &str) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_file = self.dir.join(format!("{name}.pem"));
        let key_file = self.dir.join(format!("{name}.key"));
        write_atomically(&cert_file, &cert.pem());
        write_atomically(&key_file, &key.serialize_pem());
        Leaf {
            cert_file,
            key_file,
            der: cert.der().to_vec(),
        }
    }
}

/// Writes through a temporary file and a rename, as an operator's tooling does, so a
/// reader never sees half a file.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl Drop for Pki {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
