//! LXMF proof-of-work stamps (LXStamper rules) and the join challenge that a join stamp covers.
//!
//! A stamp for `material` is 32 bytes whose `sha256(workblock(material) ‖ stamp)` has at least
//! `cost` leading zero bits. Workblocks come from `lxmf-wire`, which matched every reference vector.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// `LXStamper.WORKBLOCK_EXPAND_ROUNDS`, used for message stamps and for our join challenges.
pub const MESSAGE_ROUNDS: usize = 3000;
/// How long a join challenge stays valid.
pub const CHALLENGE_TTL_SECS: u64 = 600;
/// Stamps are 32 bytes (LXMF's `STAMP_SIZE`); LXMF accepts shorter ones, so do we.
pub const STAMP_MAX_LEN: usize = 32;

/// The expanded workblock for `material` (CPU-heavy: run it on the stamp pool).
pub fn workblock(material: &[u8], rounds: usize) -> Vec<u8> {
    lxmf_core::stamp::stamp_workblock(material, rounds)
}

/// Leading zero bits of `sha256(workblock ‖ stamp)`.
pub fn value(workblock: &[u8], stamp: &[u8]) -> u32 {
    lxmf_core::stamp::stamp_value(workblock, stamp)
}

/// Finds a stamp of at least `cost` for `material` by reusing the SHA-256 state after the workblock,
/// so each try hashes 32 bytes instead of 768 KB. Used by our tests, benches and client helpers.
pub fn generate(material: &[u8], rounds: usize, cost: u32) -> Option<[u8; 32]> {
    let wb = workblock(material, rounds);
    let mut prefix = Sha256::new();
    prefix.update(&wb);
    for nonce in 0u64.. {
        let stamp: [u8; 32] = Sha256::digest(nonce.to_le_bytes()).into();
        let mut h = prefix.clone();
        h.update(stamp);
        if leading_zero_bits(&h.finalize()) >= cost {
            return Some(stamp);
        }
        if nonce > (1u64 << 40) {
            break;
        }
    }
    None
}

fn leading_zero_bits(hash: &[u8]) -> u32 {
    let mut n = 0;
    for b in hash {
        if *b == 0 {
            n += 8;
        } else {
            n += b.leading_zeros();
            break;
        }
    }
    n
}

/// Issues and checks join challenges without storing them: a challenge is
/// `issued_at(4, BE seconds) ‖ nonce(4) ‖ HMAC(key, group ‖ identity ‖ issued_at ‖ nonce)[..24]`, so
/// it is bound to one group and one identity, expires on its own, and each one issued is new (the
/// nonce), so a challenge spent on a failed stamp is never handed out again.
#[derive(Clone)]
pub struct ChallengeKey([u8; 32]);

impl ChallengeKey {
    /// Derived from the group's private key, so it survives restarts and differs per group.
    pub fn for_group(private_key: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"meshgroup join challenge v1");
        h.update(private_key);
        ChallengeKey(h.finalize().into())
    }

    fn tag(&self, group: &[u8], identity: &[u8], head: &[u8; 8]) -> [u8; 24] {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => return [0; 24], // unreachable: HMAC takes keys of any length
        };
        mac.update(group);
        mac.update(identity);
        mac.update(head);
        let mut out = [0u8; 24];
        out.copy_from_slice(&mac.finalize().into_bytes()[..24]);
        out
    }

    /// A challenge for `identity` in `group`; `nonce` is random (the caller draws it).
    pub fn issue(&self, group: &[u8], identity: &[u8], now_secs: u64, nonce: [u8; 4]) -> Vec<u8> {
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&(now_secs.min(u64::from(u32::MAX)) as u32).to_be_bytes());
        head[4..].copy_from_slice(&nonce);
        let mut c = head.to_vec();
        c.extend_from_slice(&self.tag(group, identity, &head));
        c
    }

    /// Whether `challenge` was issued by us, for this group and identity, and has not expired.
    pub fn verify(&self, challenge: &[u8], group: &[u8], identity: &[u8], now_secs: u64) -> bool {
        if challenge.len() != 32 {
            return false;
        }
        let mut head = [0u8; 8];
        head.copy_from_slice(&challenge[..8]);
        let issued = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        let fresh = issued <= now_secs + 5 && now_secs.saturating_sub(issued) <= CHALLENGE_TTL_SECS;
        let expected = self.tag(group, identity, &head);
        fresh && constant_time_eq(&expected, &challenge[8..])
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> serde_json::Value {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.json")).expect("vectors");
        serde_json::from_str(&text).expect("json")
    }

    #[test]
    fn workblock_and_value_match_reference() {
        let v = vectors();
        let st = &v["stamps"];
        for (label, entry) in st.as_object().expect("map") {
            let Some(material) = entry.get("material_hex").and_then(|m| m.as_str()) else { continue };
            let rounds = entry["rounds"].as_u64().expect("rounds") as usize;
            let wb = workblock(&hex::decode(material).expect("hex"), rounds);
            assert_eq!(hex::encode(Sha256::digest(&wb)), entry["workblock_sha256_hex"].as_str().expect("h"), "{label}");
        }
        let ex = &st["example_stamp"];
        let wb = workblock(&hex::decode(ex["message_id_hex"].as_str().expect("mid")).expect("hex"), MESSAGE_ROUNDS);
        let stamp = hex::decode(ex["stamp_hex"].as_str().expect("stamp")).expect("hex");
        assert_eq!(u64::from(value(&wb, &stamp)), ex["value_leading_zero_bits"].as_u64().expect("v"));
        let other = hex::decode(ex["other_stamp_hex"].as_str().expect("other")).expect("hex");
        assert_eq!(u64::from(value(&wb, &other)), ex["other_stamp_value"].as_u64().expect("v"));
    }

    #[test]
    fn generated_stamps_validate() {
        let stamp = generate(b"material", 25, 8).expect("stamp");
        assert!(value(&workblock(b"material", 25), &stamp) >= 8);
    }

    #[test]
    fn challenges_bind_group_identity_and_time() {
        let k = ChallengeKey::for_group(&[7; 64]);
        let c = k.issue(b"group", b"alice", 1000, [1, 2, 3, 4]);
        assert_ne!(c, k.issue(b"group", b"alice", 1000, [1, 2, 3, 5]), "each challenge is new");
        assert!(k.verify(&c, b"group", b"alice", 1000 + CHALLENGE_TTL_SECS));
        assert!(!k.verify(&c, b"group", b"alice", 1001 + CHALLENGE_TTL_SECS), "expired");
        assert!(!k.verify(&c, b"group", b"mallory", 1000), "other identity");
        assert!(!k.verify(&c, b"other", b"alice", 1000), "other group");
        assert!(!ChallengeKey::for_group(&[8; 64]).verify(&c, b"group", b"alice", 1000), "other key");
        assert!(!k.verify(&c[..31], b"group", b"alice", 1000));
    }
}
