//! Which links and inbound transfers the server keeps: caps on links in total, per interface and per
//! identity, on inbound Resources per link, per identity and in total, and on a Resource's advertised
//! decompressed size; links idle too long are let go. A refused link is torn down by the router,
//! which drops its transfers undecompressed. Pure bookkeeping, no I/O, so every rule is unit-tested.
//!
//! reticulum-rs 0.16 accepts every Resource advertisement (but requests over the destination's
//! transfer limit) and reports a transfer only once its first part is in, so a cap is enforced by
//! tearing the link down at that moment; the crate offers no way to refuse one Resource alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::config::LimitsConfig;
use crate::transport::TransferStage;

/// Why a link, or the link a transfer came on, is not kept.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefused {
    #[error("{0} links are open, the most the server keeps")]
    Links(usize),
    #[error("{0} links are open on this interface, the most one interface may hold")]
    LinksPerInterface(usize),
    #[error("this identity holds {0} links, the most one identity may")]
    LinksPerIdentity(usize),
    #[error("a second inbound transfer on one link (RNS sends one Resource at a time)")]
    TransfersPerLink,
    #[error("this identity has {0} inbound transfers in progress, the most one identity may")]
    TransfersPerIdentity(usize),
    #[error("{0} inbound transfers are in progress, the most the server takes at once")]
    Transfers(usize),
    #[error("an inbound transfer of {0} bytes (decompressed) is over the limit of {1}")]
    TransferTooLarge(u64, usize),
}

impl LinkRefused {
    /// The `reason` label of `meshgroup_work_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            LinkRefused::Links(_) => "links",
            LinkRefused::LinksPerInterface(_) => "links_per_interface",
            LinkRefused::LinksPerIdentity(_) => "links_per_identity",
            LinkRefused::TransfersPerLink => "transfers_per_link",
            LinkRefused::TransfersPerIdentity(_) => "transfers_per_identity",
            LinkRefused::Transfers(_) => "transfers",
            LinkRefused::TransferTooLarge(..) => "transfer_too_large",
        }
    }
}

/// One inbound link the server keeps.
pub struct LinkEntry {
    /// The destination the link leads to.
    pub dest: [u8; 16],
    /// The caller, once the link is identified (hex identity hash).
    pub identity: Option<String>,
    /// The link's share of requests in progress.
    pub slots: Arc<Semaphore>,
    iface: Option<[u8; 16]>,
    /// The inbound Resource in progress, if any.
    transfer: Option<[u8; 32]>,
    last_active: Instant,
}

/// The links kept and the counts the caps apply to.
pub struct Admission {
    limits: LimitsConfig,
    links: HashMap<[u8; 16], LinkEntry>,
    per_iface: HashMap<[u8; 16], usize>,
    per_identity: HashMap<String, usize>,
    transfers: usize,
}

impl Admission {
    pub fn new(limits: &LimitsConfig) -> Self {
        Admission { limits: limits.clone(), links: HashMap::new(), per_iface: HashMap::new(), per_identity: HashMap::new(), transfers: 0 }
    }

    /// Links kept now.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// A link came up: kept, or refused at the total or per-interface cap (and not counted).
    pub fn open(&mut self, link_id: [u8; 16], dest: [u8; 16], iface: Option<[u8; 16]>) -> Result<(), LinkRefused> {
        if self.links.contains_key(&link_id) {
            return Ok(());
        }
        if self.links.len() >= self.limits.max_links {
            return Err(LinkRefused::Links(self.links.len()));
        }
        if let Some(i) = iface {
            let n = self.per_iface.get(&i).copied().unwrap_or(0);
            if n >= self.limits.max_links_per_interface {
                return Err(LinkRefused::LinksPerInterface(n));
            }
            *self.per_iface.entry(i).or_default() += 1;
        }
        self.links.insert(link_id, new_entry(&self.limits, dest, iface));
        Ok(())
    }

    /// The link of a request whose link event was lost: it is kept without a cap check (the
    /// crate already holds it), so its requests are still answered.
    pub fn get_or_insert(&mut self, link_id: [u8; 16], dest: [u8; 16]) -> &LinkEntry {
        let limits = &self.limits;
        let entry = self.links.entry(link_id).or_insert_with(|| new_entry(limits, dest, None));
        entry.last_active = Instant::now();
        entry
    }

    /// The link's caller proved who it is: kept, or refused at the per-identity cap. A link that
    /// identifies twice keeps its first identity's count.
    pub fn identified(&mut self, link_id: [u8; 16], identity: &str) -> Result<(), LinkRefused> {
        let Some(entry) = self.links.get_mut(&link_id) else { return Ok(()) };
        entry.last_active = Instant::now();
        if entry.identity.is_some() {
            return Ok(());
        }
        let n = self.per_identity.get(identity).copied().unwrap_or(0);
        if n >= self.limits.max_links_per_identity {
            return Err(LinkRefused::LinksPerIdentity(n));
        }
        *self.per_identity.entry(identity.to_owned()).or_default() += 1;
        entry.identity = Some(identity.to_owned());
        Ok(())
    }

    /// Something arrived on the link (a request or a packet): it is not idle.
    pub fn touch(&mut self, link_id: &[u8; 16]) {
        if let Some(e) = self.links.get_mut(link_id) {
            e.last_active = Instant::now();
        }
    }

    /// An inbound Resource moved on: kept, or refused (the link must go) at a transfer cap or when
    /// its advertised size is over `max_transfer_bytes`.
    pub fn transfer(&mut self, link_id: [u8; 16], hash: [u8; 32], stage: TransferStage) -> Result<(), LinkRefused> {
        let Some(entry) = self.links.get(&link_id) else { return Ok(()) };
        if stage == TransferStage::Receiving {
            match entry.transfer {
                Some(h) if h == hash => {}
                Some(_) => return Err(LinkRefused::TransfersPerLink),
                None if self.transfers >= self.limits.max_inbound_transfers => return Err(LinkRefused::Transfers(self.transfers)),
                None => {
                    if let Some(id) = entry.identity.as_deref() {
                        let n = self.links.values().filter(|e| e.transfer.is_some() && e.identity.as_deref() == Some(id)).count();
                        if n >= self.limits.max_inbound_transfers_per_identity {
                            return Err(LinkRefused::TransfersPerIdentity(n));
                        }
                    }
                }
            }
        }
        let Some(entry) = self.links.get_mut(&link_id) else { return Ok(()) };
        entry.last_active = Instant::now();
        if stage == TransferStage::Receiving {
            if entry.transfer.replace(hash).is_none() {
                self.transfers += 1;
            }
            return Ok(());
        }
        // Ended, or one segment of a split Resource done (the next comes under a hash of its
        // own): the link's place is free, and a segment tells the whole's advertised size.
        if entry.transfer.take().is_some() {
            self.transfers = self.transfers.saturating_sub(1);
        }
        match stage {
            TransferStage::Segment { total_bytes } if total_bytes > self.limits.max_transfer_bytes as u64 => {
                Err(LinkRefused::TransferTooLarge(total_bytes, self.limits.max_transfer_bytes))
            }
            _ => Ok(()),
        }
    }

    /// The link closed, or was refused: its counts are given back.
    pub fn closed(&mut self, link_id: &[u8; 16]) {
        let Some(e) = self.links.remove(link_id) else { return };
        if let Some(i) = e.iface {
            release(&mut self.per_iface, &i);
        }
        if let Some(id) = &e.identity {
            release(&mut self.per_identity, id);
        }
        if e.transfer.is_some() {
            self.transfers = self.transfers.saturating_sub(1);
        }
    }

    /// Links with nothing from their peer for `link_idle_secs` (0: never). The crate keeps a
    /// vanished peer's link for 720 s and offers no shorter stale time, so the router closes these.
    pub fn idle(&self, now: Instant) -> Vec<[u8; 16]> {
        if self.limits.link_idle_secs == 0 {
            return Vec::new();
        }
        let after = Duration::from_secs(self.limits.link_idle_secs);
        self.links.iter().filter(|(_, e)| e.transfer.is_none() && now.duration_since(e.last_active) >= after).map(|(id, _)| *id).collect()
    }
}

fn new_entry(limits: &LimitsConfig, dest: [u8; 16], iface: Option<[u8; 16]>) -> LinkEntry {
    let slots = Arc::new(Semaphore::new(limits.max_requests_per_link.max(1)));
    LinkEntry { dest, identity: None, slots, iface, transfer: None, last_active: Instant::now() }
}

fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsConfig {
        LimitsConfig {
            max_links: 3,
            max_links_per_interface: 2,
            max_links_per_identity: 1,
            max_inbound_transfers: 2,
            max_inbound_transfers_per_identity: 1,
            max_transfer_bytes: 1000,
            link_idle_secs: 60,
            ..LimitsConfig::default()
        }
    }

    const RX: TransferStage = TransferStage::Receiving;

    #[test]
    fn links_are_capped_in_total_per_interface_and_per_identity() {
        let mut a = Admission::new(&limits());
        assert_eq!(a.open([1; 16], [0; 16], Some([9; 16])), Ok(()));
        assert_eq!(a.open([2; 16], [0; 16], Some([9; 16])), Ok(()));
        assert_eq!(a.open([3; 16], [0; 16], Some([9; 16])), Err(LinkRefused::LinksPerInterface(2)));
        assert_eq!(a.open([3; 16], [0; 16], Some([8; 16])), Ok(()));
        assert_eq!(a.open([4; 16], [0; 16], None), Err(LinkRefused::Links(3)));
        assert_eq!(a.identified([1; 16], "alice"), Ok(()));
        assert_eq!(a.identified([1; 16], "alice"), Ok(()), "identifying twice counts once");
        assert_eq!(a.identified([2; 16], "alice"), Err(LinkRefused::LinksPerIdentity(1)));
        a.closed(&[2; 16]);
        a.closed(&[1; 16]);
        assert_eq!(a.identified([3; 16], "alice"), Ok(()), "a closed link gives its identity's count back");
        assert_eq!(a.open([5; 16], [0; 16], Some([9; 16])), Ok(()), "and its interface's");
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn transfers_are_capped_per_link_per_identity_and_in_total() {
        let mut a = Admission::new(&limits());
        for l in 1..=3u8 {
            a.open([l; 16], [0; 16], None).unwrap();
        }
        a.identified([1; 16], "alice").unwrap();
        assert_eq!(a.transfer([1; 16], [1; 32], RX), Ok(()));
        assert_eq!(a.transfer([1; 16], [1; 32], RX), Ok(()), "more parts of the same one");
        assert_eq!(a.transfer([1; 16], [2; 32], RX), Err(LinkRefused::TransfersPerLink));
        assert_eq!(a.transfer([2; 16], [3; 32], RX), Ok(()));
        assert_eq!(a.transfer([3; 16], [4; 32], RX), Err(LinkRefused::Transfers(2)));
        assert_eq!(a.transfer([2; 16], [3; 32], TransferStage::Ended), Ok(()));
        assert_eq!(a.transfer([3; 16], [4; 32], RX), Ok(()), "an ended transfer frees its place");
        a.closed(&[3; 16]);
        a.open([4; 16], [0; 16], None).unwrap();
        a.closed(&[2; 16]);
        assert_eq!(a.identified([4; 16], "bob"), Ok(()));
        assert_eq!(a.transfer([4; 16], [5; 32], RX), Ok(()), "a closed link frees its transfer's place");
    }

    #[test]
    fn a_split_transfer_goes_on_under_its_next_hash_until_its_size_is_over_the_limit() {
        let mut a = Admission::new(&limits());
        a.open([1; 16], [0; 16], None).unwrap();
        a.transfer([1; 16], [1; 32], RX).unwrap();
        assert_eq!(a.transfer([1; 16], [1; 32], TransferStage::Segment { total_bytes: 1000 }), Ok(()));
        assert_eq!(a.transfer([1; 16], [2; 32], RX), Ok(()), "the second segment");
        assert_eq!(a.transfer([1; 16], [1; 32], TransferStage::Segment { total_bytes: 1001 }), Err(LinkRefused::TransferTooLarge(1001, 1000)));
    }

    #[test]
    fn idle_links_are_named_unless_a_transfer_is_in_progress() {
        let mut a = Admission::new(&limits());
        a.open([1; 16], [0; 16], None).unwrap();
        a.open([2; 16], [0; 16], None).unwrap();
        a.transfer([2; 16], [2; 32], RX).unwrap();
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(a.idle(later), vec![[1; 16]]);
        assert!(a.idle(Instant::now()).is_empty());
        let off = Admission::new(&LimitsConfig { link_idle_secs: 0, ..limits() });
        assert!(off.idle(later).is_empty());
    }
}
