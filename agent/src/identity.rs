//! The peers' identities: each agent signs its ballots and relays with its own Ed25519 key
//! (`[agent] key_file`), and checks its peers' against their public keys (`peer_keys`). The
//! peers' shared token only says "one of us"; a signature says which one, so a ballot counts
//! for the agent that signed it, once, and a relayed pause names the agent it came from.
//!
//! Every signed text starts with its own domain line (`valkey-dr vote v1`, `valkey-dr relay
//! v1`), so a signature made for one purpose is never valid for another.
//!
//! A key file holds one line: the base64 (standard alphabet) of the key's PKCS#8 document,
//! as `valkey-dr keygen` writes it. A public key is the base64 of its 32 bytes.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// The bytes of a nonce: 128 bits, so a guess never repeats one.
pub const NONCE_BYTES: usize = 16;

/// This agent's signing key. Its `Debug` names the public key only.
pub struct Identity {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity(public {})", self.public_base64())
    }
}

/// Why a key or a signature was refused; each says what is valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not base64.
    #[error("is not base64 (standard alphabet, with padding)")]
    NotBase64,
    /// Base64, but not an Ed25519 PKCS#8 document.
    #[error(
        "is not an Ed25519 private key: a key file holds one line, the base64 PKCS#8 document `valkey-dr keygen --out FILE` writes"
    )]
    NotPrivateKey,
    /// Base64, but not 32 bytes.
    #[error(
        "is not an Ed25519 public key: 32 bytes in base64 (44 characters), as `valkey-dr keygen` prints it"
    )]
    NotPublicKey,
}

impl Identity {
    /// The key in a key file's text (surrounding whitespace ignored).
    pub fn from_file_text(text: &str) -> Result<Identity, KeyError> {
        let der = BASE64
            .decode(text.trim())
            .map_err(|_| KeyError::NotBase64)?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|_| KeyError::NotPrivateKey)?;
        Ok(Identity { pair })
    }

    /// A fresh key: the key file's text and the public key, both base64.
    pub fn generate() -> Result<(String, String), ring::error::Unspecified> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())?;
        let text = BASE64.encode(doc.as_ref());
        let identity = Identity::from_file_text(&text).map_err(|_| ring::error::Unspecified)?;
        Ok((text, identity.public_base64()))
    }

    /// The public key, base64, as `peer_keys` lists it.
    pub fn public_base64(&self) -> String {
        BASE64.encode(self.pair.public_key().as_ref())
    }

    /// The signature of `message`, base64.
    pub fn sign(&self, message: &[u8]) -> String {
        BASE64.encode(self.pair.sign(message).as_ref())
    }
}

/// A peer's public key, from `peer_keys`.
pub fn public_key(text: &str) -> Result<Vec<u8>, KeyError> {
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|_| KeyError::NotBase64)?;
    if bytes.len() == 32 {
        Ok(bytes)
    } else {
        Err(KeyError::NotPublicKey)
    }
}

/// The peers' public keys by agent id.
#[derive(Debug, Clone, Default)]
pub struct PeerKeys(BTreeMap<String, Vec<u8>>);

/// Why a signature was not taken, in a few words for a ballot or a `401`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unverified {
    /// No signature at all.
    Unsigned,
    /// The id is not in `peer_keys`.
    UnknownId,
    /// The signature does not verify with the id's key.
    WrongKey,
}

impl Unverified {
    /// In words.
    pub fn as_str(self) -> &'static str {
        match self {
            Unverified::Unsigned => "unsigned",
            Unverified::UnknownId => "its agent id is not in peer_keys",
            Unverified::WrongKey => "signed by a key not in peer_keys for its agent id",
        }
    }
}

impl PeerKeys {
    /// From validated `peer_keys` (a key that does not decode is left out; config refuses it).
    pub fn new(keys: &BTreeMap<String, String>) -> PeerKeys {
        PeerKeys(
            keys.iter()
                .filter_map(|(id, key)| Some((id.clone(), public_key(key).ok()?)))
                .collect(),
        )
    }

    /// These keys and this agent's own (`agent_id`'s, from its `identity`), whatever
    /// `peer_keys` listed for that id: the agent's own answers and relays, reached through a
    /// name that covers every agent, are then known for its own and left out, rather than
    /// counted as a stranger's.
    pub fn with_own(mut self, agent_id: &str, identity: &Identity) -> PeerKeys {
        self.0.insert(
            agent_id.to_owned(),
            identity.pair.public_key().as_ref().to_vec(),
        );
        self
    }

    /// Whether `signature` (base64) over `message` is `agent_id`'s.
    pub fn verify(
        &self,
        agent_id: &str,
        message: &[u8],
        signature: Option<&str>,
    ) -> Result<(), Unverified> {
        let signature = signature
            .filter(|s| !s.is_empty())
            .ok_or(Unverified::Unsigned)?;
        let key = self.0.get(agent_id).ok_or(Unverified::UnknownId)?;
        let signature = BASE64.decode(signature).map_err(|_| Unverified::WrongKey)?;
        UnparsedPublicKey::new(&ED25519, key)
            .verify(message, &signature)
            .map_err(|_| Unverified::WrongKey)
    }
}

/// What a ballot's signature covers.
pub fn vote_message(
    agent_id: &str,
    watch: &str,
    down: bool,
    round_at_ms: u64,
    nonce: &str,
) -> Vec<u8> {
    format!("valkey-dr vote v1\n{agent_id}\n{watch}\n{down}\n{round_at_ms}\n{nonce}").into_bytes()
}

/// What a relayed pause or resume's signature covers: who relays it, the action, the watch
/// (empty: every watch), the pause's end (Unix seconds, empty: none), its reason, and when
/// it was sent (Unix ms).
pub fn relay_message(
    agent_id: &str,
    action: &str,
    watch: Option<&str>,
    until_s: Option<u64>,
    reason: Option<&str>,
    at_ms: u64,
) -> Vec<u8> {
    format!(
        "valkey-dr relay v1\n{agent_id}\n{action}\n{}\n{}\n{}\n{at_ms}",
        watch.unwrap_or_default(),
        until_s.map(|s| s.to_string()).unwrap_or_default(),
        reason.unwrap_or_default()
    )
    .into_bytes()
}

/// A fresh random nonce, hex; `None` only when the system has no randomness to give.
pub fn nonce() -> Option<String> {
    let mut bytes = [0u8; NONCE_BYTES];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_own_key_only() {
        let (a_text, a_public) = Identity::generate().expect("key");
        let (_, b_public) = Identity::generate().expect("key");
        let a = Identity::from_file_text(&format!("{a_text}\n")).expect("reads back");
        assert_eq!(a.public_base64(), a_public);
        assert!(!format!("{a:?}").contains(&a_text));
        let keys = PeerKeys::new(&BTreeMap::from([
            ("a".to_owned(), a_public),
            ("b".to_owned(), b_public),
        ]));
        let msg = vote_message("a", "w", true, 1, "n");
        let sig = a.sign(&msg);
        assert_eq!(keys.verify("a", &msg, Some(&sig)), Ok(()));
        assert_eq!(
            keys.verify("b", &msg, Some(&sig)),
            Err(Unverified::WrongKey)
        );
        assert_eq!(
            keys.verify("c", &msg, Some(&sig)),
            Err(Unverified::UnknownId)
        );
        assert_eq!(keys.verify("a", &msg, None), Err(Unverified::Unsigned));
        let other = vote_message("a", "w", true, 1, "m");
        assert_eq!(
            keys.verify("a", &other, Some(&sig)),
            Err(Unverified::WrongKey)
        );
        assert_eq!(
            Identity::from_file_text("nope!").err(),
            Some(KeyError::NotBase64)
        );
        assert_eq!(
            Identity::from_file_text("AAAA").err(),
            Some(KeyError::NotPrivateKey)
        );
        assert_eq!(public_key("AAAA"), Err(KeyError::NotPublicKey));
        assert_eq!(nonce().expect("random").len(), 2 * NONCE_BYTES);
    }
}
