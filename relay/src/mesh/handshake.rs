//! The peer handshake: mutual challenge–response over fresh nonces
//! (`docs/mesh-protocol.md`). Both sides prove they hold the key they name by signing a
//! transcript that binds both ids, keys, nonces and addresses; with a mesh token, both
//! also send its HMAC of the transcript (the token itself never crosses the wire). Every
//! message of it is read within `HANDSHAKE_BYTES_MAX` and the handshake timeout.
//!
//! 1. dialer → acceptor `handshake` {relay_id, address, public_key, nonce, …}
//! 2. acceptor → dialer `handshake_challenge` {relay_id, address, public_key, nonce,
//!    signature, mac?}
//! 3. dialer → acceptor `handshake_proof` {signature, mac?}
//! 4. acceptor → dialer `handshake_response` {status: "accepted", …}

use std::time::Duration;

use tokio::io::AsyncRead;

use super::Mesh;
use super::trust::Refusal;
use crate::conn::codec::{FrameReader, Incoming};
use crate::conn::{Outbound, Outlet};
use crate::identity::PublicKey;
use crate::protocol::signed::{self, Challenge, ProofFault, Role, Transcript};

/// Bytes of one handshake message (the challenge and the proof are well under 1 KiB): the
/// reader's bound until the link is up.
pub const HANDSHAKE_BYTES_MAX: usize = 4096;
/// Bound on each step of the handshake (also bounded by `limits.handshake_timeout_secs`).
pub const HANDSHAKE_STEP_TIMEOUT_MAX: Duration = Duration::from_secs(5);

/// Who is on the other side, proven.
pub struct Proven {
    pub relay_id: String,
    pub address: String,
}

impl Mesh {
    fn handshake_step_timeout(&self) -> Duration {
        self.parts
            .config
            .limits
            .handshake_timeout()
            .min(HANDSHAKE_STEP_TIMEOUT_MAX)
    }

    fn token(&self) -> Option<&str> {
        self.parts.config.auth.mesh_token.as_deref()
    }

    /// Counts a refused handshake and says why in the log.
    pub(super) fn count_refusal(&self, peer: &str, refusal: Refusal) {
        self.parts
            .metrics
            .mesh_handshakes_refused
            .get(refusal.as_str())
            .increment(1);
        let peer: String = peer.chars().take(64).collect();
        tracing::info!(%peer, reason = refusal.as_str(), "relay handshake refused");
    }
}

fn proof_refusal(fault: ProofFault) -> Refusal {
    match fault {
        ProofFault::Signature => Refusal::BadSignature,
        ProofFault::Token => Refusal::BadToken,
    }
}

/// Reads one text frame within the step timeout.
async fn read_text<R: AsyncRead + Unpin>(
    mesh: &Mesh,
    reader: &mut FrameReader<R>,
) -> Result<bytes::Bytes, Refusal> {
    match tokio::time::timeout(mesh.handshake_step_timeout(), reader.next()).await {
        Ok(Ok(Incoming::Text(text))) => Ok(text),
        Ok(_) => Err(Refusal::Malformed),
        Err(_) => Err(Refusal::Timeout),
    }
}

/// The acceptor's side, after the dialer's `handshake` (id and address already checked
/// for bounds): challenge it, check its proof. On success the caller answers `accepted`.
///
/// # Errors
/// Why the dialer is refused (the caller answers `rejected` and counts it).
pub(super) async fn accept<R: AsyncRead + Unpin>(
    mesh: &Mesh,
    reader: &mut FrameReader<R>,
    outlet: &Outlet,
    claim: (&str, &str, &str, &str),
) -> Result<Proven, Refusal> {
    let (dialer_id, dialer_address, key_hex, nonce_hex) = claim;
    let dialer_key = PublicKey::parse(key_hex).map_err(|_| Refusal::Malformed)?;
    let dialer_nonce = signed::parse_nonce(nonce_hex).ok_or(Refusal::Malformed)?;
    mesh.trust.check_claim(dialer_id, &dialer_key)?;
    let identity = mesh.parts.origin.identity();
    let acceptor_nonce = mesh.parts.rng.bytes32();
    let transcript = Transcript {
        dialer_id,
        dialer_key: &dialer_key,
        dialer_nonce: &dialer_nonce,
        dialer_address,
        acceptor_id: mesh.relay_id(),
        acceptor_key: identity.public(),
        acceptor_nonce: &acceptor_nonce,
        acceptor_address: mesh.parts.config.advertised_addr(),
    };
    let challenge = Challenge {
        relay_id: mesh.relay_id().to_string(),
        public_key: identity.public().to_hex(),
        nonce: hex::encode(acceptor_nonce),
        address: mesh.parts.config.advertised_addr().to_string(),
        proof: transcript.prove(Role::Acceptor, identity, mesh.token()),
    };
    reader.set_message_bytes_max(HANDSHAKE_BYTES_MAX);
    outlet.offer(Outbound::Text(signed::encode_challenge(&challenge)));
    let text = read_text(mesh, reader).await?;
    let proof = signed::parse_proof(&text).map_err(|_| Refusal::Malformed)?;
    transcript
        .check(Role::Dialer, &proof, mesh.token())
        .map_err(proof_refusal)?;
    mesh.trust.bind(dialer_id, &dialer_key)?;
    Ok(Proven {
        relay_id: dialer_id.to_string(),
        address: dialer_address.to_string(),
    })
}

/// What the dialer learned from a challenge, and the proof it must send back.
pub(super) struct Answer {
    pub proven: Proven,
    pub proof: bytes::Bytes,
}

/// The dialer's side, on the acceptor's `handshake_challenge`: check the acceptor's
/// proof and claim, then prove this relay's own.
///
/// # Errors
/// Why the acceptor is not believed.
pub(super) fn answer_challenge(
    mesh: &Mesh,
    dialer_nonce: &[u8; signed::NONCE_BYTES],
    challenge: &Challenge,
) -> Result<Answer, Refusal> {
    if !crate::protocol::peer::relay_id_fits(&challenge.relay_id)
        || challenge.address.is_empty()
        || !crate::protocol::peer::address_fits(&challenge.address)
    {
        return Err(Refusal::Malformed);
    }
    let acceptor_key = PublicKey::parse(&challenge.public_key).map_err(|_| Refusal::Malformed)?;
    let acceptor_nonce = signed::parse_nonce(&challenge.nonce).ok_or(Refusal::Malformed)?;
    mesh.trust.check_claim(&challenge.relay_id, &acceptor_key)?;
    let identity = mesh.parts.origin.identity();
    let transcript = Transcript {
        dialer_id: mesh.relay_id(),
        dialer_key: identity.public(),
        dialer_nonce,
        dialer_address: mesh.parts.config.advertised_addr(),
        acceptor_id: &challenge.relay_id,
        acceptor_key: &acceptor_key,
        acceptor_nonce: &acceptor_nonce,
        acceptor_address: &challenge.address,
    };
    transcript
        .check(Role::Acceptor, &challenge.proof, mesh.token())
        .map_err(proof_refusal)?;
    mesh.trust.bind(&challenge.relay_id, &acceptor_key)?;
    let proof = transcript.prove(Role::Dialer, identity, mesh.token());
    Ok(Answer {
        proven: Proven {
            relay_id: challenge.relay_id.clone(),
            address: challenge.address.clone(),
        },
        proof: signed::encode_proof(&proof),
    })
}
