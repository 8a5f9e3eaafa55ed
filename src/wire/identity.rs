//! Reticulum identities and hashes: key generation, identity hash, name hash, destination hash.
//!
//! Pure functions over bytes; the definitions are those of `RNS.Identity` / `RNS.Destination`
//! (see `shared/protocol/PROTOCOL.md` §1) and are checked against the reference vectors.

use sha2::{Digest, Sha256};

/// Aspect names of the two destinations every hosted group has.
pub const GROUP_ASPECT: &str = "meshchat.group";
pub const LXMF_ASPECT: &str = "lxmf.delivery";

/// A group's identity: the 64-byte private key and what follows from it.
#[derive(Clone)]
pub struct GroupIdentity {
    pub private_key: [u8; 64],
    pub public_key: [u8; 64],
    pub hash: [u8; 16],
}

impl std::fmt::Debug for GroupIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupIdentity").field("hash", &hex::encode(self.hash)).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("a Reticulum private key is 64 bytes, got {0}")]
    BadLength(usize),
    #[error("invalid key material")]
    Invalid,
}

impl GroupIdentity {
    /// A fresh identity from the OS random source, made by the Reticulum crate.
    pub fn generate() -> Self {
        let id = rns_transport::identity::PrivateIdentity::new_from_rand(rand::rngs::OsRng);
        let private_key = id.to_private_key_bytes();
        // Rebuilding from bytes keeps a single code path for generated and imported keys.
        Self::from_private_key(&private_key).unwrap_or_else(|_| unreachable_identity())
    }

    /// Loads the Reticulum identity file format: `x25519_private(32) ‖ ed25519_seed(32)`.
    pub fn from_private_key(bytes: &[u8]) -> Result<Self, IdentityError> {
        let private_key: [u8; 64] = bytes.try_into().map_err(|_| IdentityError::BadLength(bytes.len()))?;
        let id = rns_transport::identity::PrivateIdentity::from_private_key_bytes(&private_key).map_err(|_| IdentityError::Invalid)?;
        let public = id.as_identity();
        let mut public_key = [0u8; 64];
        public_key[..32].copy_from_slice(public.public_key_bytes());
        public_key[32..].copy_from_slice(public.verifying_key_bytes());
        Ok(GroupIdentity { private_key, public_key, hash: identity_hash(&public_key) })
    }

    /// The destination hash of this identity under an aspect such as `lxmf.delivery`.
    pub fn destination(&self, aspect: &str) -> [u8; 16] {
        destination_hash(aspect, &self.hash)
    }
}

/// `generate` feeds valid bytes back into `from_private_key`; this is never reached.
#[cold]
fn unreachable_identity() -> GroupIdentity {
    GroupIdentity { private_key: [0; 64], public_key: [0; 64], hash: [0; 16] }
}

fn truncated(data: &[u8]) -> [u8; 16] {
    let full = Sha256::digest(data);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// `TH(public_key)`: the 16-byte identity hash.
pub fn identity_hash(public_key: &[u8; 64]) -> [u8; 16] {
    truncated(public_key)
}

/// `H("app.aspect")[:10]`.
pub fn name_hash(aspect: &str) -> [u8; 10] {
    let full = Sha256::digest(aspect.as_bytes());
    let mut out = [0u8; 10];
    out.copy_from_slice(&full[..10]);
    out
}

/// `TH(name_hash ‖ identity_hash)`.
pub fn destination_hash(aspect: &str, identity_hash: &[u8; 16]) -> [u8; 16] {
    let mut data = [0u8; 26];
    data[..10].copy_from_slice(&name_hash(aspect));
    data[10..].copy_from_slice(identity_hash);
    truncated(&data)
}

/// The `lxmf.delivery` destination hash (hex) of an identity given as hex, `None` if it is not
/// 32 hex characters.
pub fn lxmf_hash_of(identity_hex: &str) -> Option<String> {
    let mut id = [0u8; 16];
    hex::decode_to_slice(identity_hex, &mut id).ok()?;
    Some(hex::encode(destination_hash(LXMF_ASPECT, &id)))
}

/// `TH(data)`; also the path hash of an RNS request (`TH(utf8(path))`).
pub fn truncated_hash(data: &[u8]) -> [u8; 16] {
    truncated(data)
}

/// Parses 32 hex characters (case-insensitive, optional `<…>` as Reticulum tools print).
pub fn parse_hash(s: &str) -> Option<[u8; 16]> {
    let s = s.trim().trim_start_matches('<').trim_end_matches('>');
    if s.len() != 32 {
        return None;
    }
    let bytes = hex::decode(s).ok()?;
    bytes.try_into().ok()
}

/// The contact link that stock LXMF clients (Columba, Sideband, MeshChatX) write and scan:
/// `lxma://<lxmf.delivery hash hex>:<public key hex>`. The key lets a client encrypt to the
/// destination at once, without waiting for its announce.
pub fn contact_link(lxmf_hash: &[u8; 16], public_key: &[u8; 64]) -> String {
    format!("lxma://{}:{}", hex::encode(lxmf_hash), hex::encode(public_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> serde_json::Value {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.json")).expect("tests/vectors.json");
        serde_json::from_str(&text).expect("vectors parse")
    }

    fn hexv(v: &serde_json::Value) -> Vec<u8> {
        hex::decode(v.as_str().expect("hex string")).expect("hex")
    }

    #[test]
    fn identity_matches_reference_vectors() {
        let v = vectors();
        for key in ["identity", "peer_identity"] {
            let id = GroupIdentity::from_private_key(&hexv(&v[key]["private_key_hex"])).expect("key");
            assert_eq!(id.public_key.to_vec(), hexv(&v[key]["public_key_hex"]));
            assert_eq!(id.hash.to_vec(), hexv(&v[key]["identity_hash_hex"]));
        }
        let id = GroupIdentity::from_private_key(&hexv(&v["identity"]["private_key_hex"])).expect("key");
        for aspect in [GROUP_ASPECT, LXMF_ASPECT, "lxmf.propagation"] {
            assert_eq!(name_hash(aspect).to_vec(), hexv(&v["identity"]["name_hashes"][aspect]));
            assert_eq!(id.destination(aspect).to_vec(), hexv(&v["identity"]["destination_hashes"][aspect]));
        }
    }

    #[test]
    fn request_path_hashes_match_reference() {
        let v = vectors();
        for (path, want) in v["requests"]["path_hashes"].as_object().expect("map") {
            assert_eq!(truncated_hash(path.as_bytes()).to_vec(), hexv(want), "{path}");
        }
    }

    #[test]
    fn generated_identity_round_trips() {
        let id = GroupIdentity::generate();
        let again = GroupIdentity::from_private_key(&id.private_key).expect("reload");
        assert_eq!(id.hash, again.hash);
        assert_ne!(id.hash, [0; 16]);
    }

    #[test]
    fn the_contact_link_names_the_lxmf_destination_and_its_key() {
        let id = GroupIdentity::from_private_key(&hexv(&vectors()["identity"]["private_key_hex"])).expect("key");
        let link = contact_link(&id.destination(LXMF_ASPECT), &id.public_key);
        let (dest, key) = link.strip_prefix("lxma://").and_then(|l| l.split_once(':')).expect("lxma://hash:key");
        assert_eq!((dest.len(), key.len()), (32, 128));
        let key: [u8; 64] = hex::decode(key).expect("hex").try_into().expect("64 bytes");
        assert_eq!(hex::encode(destination_hash(LXMF_ASPECT, &identity_hash(&key))), dest, "the key gives the hash");
    }

    #[test]
    fn parse_hash_rejects_malformed() {
        assert!(parse_hash("<3e3c2cef10df1fa5ed6139690e3a9620>").is_some());
        assert!(parse_hash("3e3c2cef10df1fa5ed6139690e3a962").is_none());
        assert!(parse_hash("zz3c2cef10df1fa5ed6139690e3a9620").is_none());
        assert_eq!(GroupIdentity::from_private_key(&[1; 10]).err(), Some(IdentityError::BadLength(10)));
    }
}
