//! The post journal: inbound LXMF that the transport proved before we could store it.
//!
//! reticulum-rs proves link packets and Resources (LXMF direct delivery) on receipt, before our
//! commit, and offers no hook to wait. A post in that state is acknowledged to its sender, so it
//! must survive a database outage or a crash until it is committed. Each one is written here
//! first, and settled once the group has stored it or refused it for good. Whatever is left is
//! replayed: at start-up, and every few seconds while the database is away. Replaying is
//! idempotent, because posts are de-duplicated by message hash.
//!
//! The journal is a group commit: one writer thread appends every post that arrived together to a
//! segment file and syncs it once (`fdatasync`), so posts in flight together share one sync
//! instead of paying two each (a file per post, then its directory). A settled post gets a marker
//! that is not synced: losing one at a crash only replays a duplicate. Segments are deleted from
//! the oldest while all their posts are settled, so the segment that holds a marker is never
//! deleted before the one that holds the post it settles; posts still held in an old segment
//! move to the current one, so one post that keeps failing does not keep every newer segment.
//! Damage inside a segment costs the frames it hit: reading resumes at the next frame that checks.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

/// A segment is closed, and a new one started, once it holds this much.
const SEGMENT_BYTES: u64 = 8 << 20;
/// Segments kept before the posts still held in the oldest are moved out of it.
const KEEP_SEGMENTS: usize = 4;
/// Commands the writer takes at once at most: posts in one batch share one sync.
const MAX_BATCH: usize = 256;
/// Commands waiting for the writer at most; a full queue makes their senders wait.
const QUEUE: usize = 1024;
/// A post's frame: kind, id, written at (ms), destination, payload length; then the payload and
/// a check.
const POST_HEADER: usize = 1 + 8 + 8 + 16 + 4;
const CHECK: usize = 4;
/// Ids a writer hands out; a frame found after damage with a larger one is not one of ours.
const MAX_ID: EntryId = 1 << 62;
/// The times (ms) at which a frame found after damage can have been written: 2020 to 2200.
const PLAUSIBLE_WRITTEN_AT_MS: std::ops::Range<i64> = 1_577_836_800_000..7_258_118_400_000;
const KIND_POST: u8 = 1;
const KIND_SETTLED: u8 = 2;

/// Journal failures; each keeps the path and the cause.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the journal holds {0} posts, its limit; this one is not journaled")]
    Full(usize),
    #[error("the journal writer has stopped")]
    Stopped,
    #[error("the journal cannot be written now (its last write failed; see the log)")]
    Unwritable,
    #[error("journal segment {0} is gone while it holds posts")]
    SegmentGone(u64),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.to_owned(), source }
}

/// Which journaled post: ids grow in arrival order (across a restart too, while posts are held).
pub type EntryId = u64;

/// One journaled post: its id, when it was written, the group destination it was sent to, the
/// packed LXMF.
#[derive(Debug)]
pub struct Entry {
    pub id: EntryId,
    pub written_at: i64,
    pub dest: [u8; 16],
    pub packed: Vec<u8>,
}

/// What the writer is asked to do, in the order asked.
enum Cmd {
    /// Writes a post durably; answered once it is synced.
    Append { dest: [u8; 16], packed: Vec<u8>, reply: oneshot::Sender<Result<EntryId, JournalError>> },
    /// Forgets a post the group stored or refused for good.
    Settle(EntryId),
    /// The posts held that were written before the cutoff (ms), oldest first.
    Pending { written_before_ms: i64, reply: oneshot::Sender<Result<Vec<Entry>, JournalError>> },
}

/// The journal: a handle on its writer thread, which owns the files.
pub struct Journal {
    tx: mpsc::Sender<Cmd>,
    syncs: Arc<AtomicU64>,
}

impl Journal {
    /// Opens (creating, 0700) the directory, reads what a previous run left, and starts the
    /// writer; at most `max_entries` posts are held.
    pub fn open(dir: &Path, max_entries: usize) -> Result<Self, JournalError> {
        Self::open_with(dir, max_entries, SEGMENT_BYTES)
    }

    fn open_with(dir: &Path, max_entries: usize, segment_bytes: u64) -> Result<Self, JournalError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        let syncs = Arc::new(AtomicU64::new(0));
        let mut w = Writer::recover(dir, max_entries, segment_bytes, syncs.clone())?;
        w.import_one_file_entries()?;
        w.drop_settled_segments();
        w.publish();
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new().name("meshgroup-journal".into()).spawn(move || w.run(rx)).map_err(io(dir))?;
        Ok(Journal { tx, syncs })
    }

    /// Writes one post durably before anything else happens to it; it shares its sync with
    /// every post written at the same time.
    pub async fn append(&self, dest: [u8; 16], packed: Vec<u8>) -> Result<EntryId, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Cmd::Append { dest, packed, reply }).await.map_err(|_| JournalError::Stopped)?;
        answer.await.map_err(|_| JournalError::Stopped)?
    }

    /// Forgets a post that the group stored or refused for good (settling one twice is fine).
    pub async fn settle(&self, id: EntryId) {
        // A writer that stopped settles nothing; the post is replayed and found a duplicate.
        let _ = self.tx.send(Cmd::Settle(id)).await;
    }

    /// Posts held that were written before `written_before_ms`, oldest first (later ones may
    /// still be in the hands of the task that wrote them).
    pub async fn pending(&self, written_before_ms: i64) -> Result<Vec<Entry>, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Cmd::Pending { written_before_ms, reply }).await.map_err(|_| JournalError::Stopped)?;
        answer.await.map_err(|_| JournalError::Stopped)?
    }

    /// Syncs done so far (one per batch of posts written together).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

/// Where a held post's payload is.
struct Held {
    segment: u64,
    offset: u64,
    len: usize,
    written_at: i64,
    dest: [u8; 16],
}

/// One segment file, and how many of its posts are held and their payload bytes.
struct Segment {
    file: File,
    path: PathBuf,
    held: usize,
    held_bytes: u64,
}

/// The writer thread's state: it alone touches the files.
struct Writer {
    dir: PathBuf,
    max_entries: usize,
    segment_bytes: u64,
    next_id: EntryId,
    segments: BTreeMap<u64, Segment>,
    /// The segment appended to, and its length.
    current: u64,
    /// The number the next segment gets: it only moves forward, so a segment that failed to
    /// start (its file left behind) is never tried again.
    next_seq: u64,
    size: u64,
    /// A write failed: the segment may end in a torn frame, so the next batch starts a new one.
    broken: bool,
    held: BTreeMap<EntryId, Held>,
    syncs: Arc<AtomicU64>,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.journal"))
}

fn check(bytes: &[u8]) -> [u8; CHECK] {
    let d = Sha256::digest(bytes);
    [d[0], d[1], d[2], d[3]]
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// A frame read back from a segment.
enum Frame {
    Post { id: EntryId, written_at: i64, dest: [u8; 16], offset: usize, len: usize },
    Settled(EntryId),
}

/// The frames of a segment, each with whether a resync found it. A frame that is cut short or
/// does not check is either the tail a crash tore (nothing after it was ever acknowledged, as a
/// failed write starts a new segment) or damage: reading resumes at the next offset where a
/// frame checks, so damage costs the posts it hit, not the rest of the segment. A frame found so
/// may be bytes of a post's payload that happen to check (the check is not keyed, and payloads
/// come from the network), so the caller trusts it less.
fn frames(bytes: &[u8], path: &Path) -> Vec<(Frame, bool)> {
    let mut out = Vec::new();
    let (mut at, mut resynced) = (0, false);
    // What the searches may hash in all: one that tried every offset, each claiming a long frame,
    // would otherwise hash the segment once per offset.
    let mut budget = 2 * bytes.len() + 4096;
    while at < bytes.len() {
        if let Some((f, next)) = frame_at(bytes, at, None) {
            out.push((f, resynced));
            at = next;
            continue;
        }
        match (at + 1..bytes.len()).find(|&p| frame_at(bytes, p, Some(&mut budget)).is_some()) {
            Some(p) => {
                tracing::error!(path = %path.display(), offset = at, skipped = p - at, "journal segment damaged; the frames after the damage are read");
                at = p;
                resynced = true;
            }
            None => {
                tracing::error!(path = %path.display(), offset = at, skipped = bytes.len() - at, "journal segment cut short; the rest of it is ignored");
                break;
            }
        }
    }
    out
}

/// The frame that starts at `at`, and where the next one starts; `None` if it is cut short or
/// does not check. While searching after damage (`search`: what may still be hashed), a frame
/// must also look like one this writer made, and what checking it hashes is charged.
fn frame_at(bytes: &[u8], at: usize, mut search: Option<&mut usize>) -> Option<(Frame, usize)> {
    let u64_at = |i: usize| bytes.get(i..i + 8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_le_bytes);
    let searching = search.is_some();
    let mut checked = |end: usize| {
        if let Some(budget) = search.as_deref_mut() {
            *budget = budget.checked_sub(end - at)?;
        }
        bytes.get(end..end + CHECK).is_some_and(|c| c == check(&bytes[at..end])).then_some(())
    };
    match *bytes.get(at)? {
        KIND_POST => {
            let (id, written_at) = (u64_at(at + 1)?, u64_at(at + 9)? as i64);
            let dest = <[u8; 16]>::try_from(bytes.get(at + 17..at + 33)?).ok()?;
            let len = u32::from_le_bytes(<[u8; 4]>::try_from(bytes.get(at + 33..at + 37)?).ok()?) as usize;
            let end = (at + POST_HEADER).checked_add(len)?;
            // Most offsets fail these cheap tests before anything is hashed.
            if searching && (!PLAUSIBLE_WRITTEN_AT_MS.contains(&written_at) || id >= MAX_ID || end + CHECK > bytes.len()) {
                return None;
            }
            checked(end)?;
            Some((Frame::Post { id, written_at, dest, offset: at + POST_HEADER, len }, end + CHECK))
        }
        KIND_SETTLED => {
            let id = u64_at(at + 1)?;
            checked(at + 9)?;
            Some((Frame::Settled(id), at + 9 + CHECK))
        }
        _ => None,
    }
}

impl Writer {
    /// Reads every segment a previous run left; appends go to a new one.
    fn recover(dir: &Path, max_entries: usize, segment_bytes: u64, syncs: Arc<AtomicU64>) -> Result<Self, JournalError> {
        let mut seqs: Vec<u64> = fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "journal"))
            .filter_map(|p| p.file_stem()?.to_str()?.parse().ok())
            .collect();
        seqs.sort_unstable();
        let mut w = Writer {
            dir: dir.to_owned(),
            max_entries,
            segment_bytes,
            next_id: 0,
            segments: BTreeMap::new(),
            current: 0,
            next_seq: 0,
            size: 0,
            broken: true,
            held: BTreeMap::new(),
            syncs,
        };
        for seq in seqs {
            let path = segment_path(dir, seq);
            let bytes = fs::read(&path).map_err(io(&path))?;
            for (f, resynced) in frames(&bytes, &path) {
                match f {
                    // Found after damage, it may be a payload's bytes: it adds a post (which the
                    // replay checks like any other), never replaces or drops one.
                    Frame::Post { id, .. } if resynced && (id >= MAX_ID || w.held.contains_key(&id)) => {}
                    Frame::Settled(_) if resynced => {}
                    Frame::Post { id, written_at, dest, offset, len } => {
                        w.next_id = w.next_id.max(id.saturating_add(1));
                        w.held.insert(id, Held { segment: seq, offset: offset as u64, len, written_at, dest });
                    }
                    Frame::Settled(id) => {
                        w.held.remove(&id);
                    }
                }
            }
            let file = File::open(&path).map_err(io(&path))?;
            w.segments.insert(seq, Segment { file, path, held: 0, held_bytes: 0 });
            w.current = seq;
            w.next_seq = seq + 1;
        }
        for h in w.held.values() {
            if let Some(s) = w.segments.get_mut(&h.segment) {
                s.held += 1;
                s.held_bytes += h.len as u64;
            }
        }
        w.start_segment()?;
        Ok(w)
    }

    /// Moves the posts an earlier version left as one file each (`*.post`) into the segment, and
    /// deletes its half-written ones (`*.tmp`: never acknowledged).
    fn import_one_file_entries(&mut self) -> Result<(), JournalError> {
        let mut paths: Vec<PathBuf> = fs::read_dir(&self.dir).map_err(io(&self.dir))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths.iter().filter(|p| p.extension().is_some_and(|x| x == "tmp")) {
            fs::remove_file(path).map_err(io(path))?;
        }
        for path in paths.into_iter().filter(|p| p.extension().is_some_and(|x| x == "post")) {
            let bytes = fs::read(&path).map_err(io(&path))?;
            let written_at = path.file_name().and_then(|n| n.to_str()?.split('-').next()?.parse().ok()).unwrap_or_else(crate::store::now_ms);
            match bytes.get(..16).and_then(|d| <[u8; 16]>::try_from(d).ok()) {
                Some(dest) => {
                    let mut buf = Vec::new();
                    self.stage_post(&mut buf, written_at, dest, &bytes[16..]);
                    self.write(&buf, true)?;
                }
                // Cut short by a full disk at the crash: never a whole post.
                None => tracing::warn!(path = %path.display(), "journal entry shorter than its destination hash; removed"),
            }
            fs::remove_file(&path).map_err(io(&path))?;
        }
        Ok(())
    }

    /// Starts a new segment (created, its directory synced) and appends to it from now on.
    fn start_segment(&mut self) -> Result<(), JournalError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = segment_path(&self.dir, seq);
        let file = fs::OpenOptions::new().read(true).append(true).create_new(true).mode(0o600).open(&path).map_err(io(&path))?;
        if let Err(err) = sync_dir(&self.dir) {
            // Not durable: nothing may be acknowledged from it.
            let _ = fs::remove_file(&path);
            return Err(err);
        }
        self.segments.insert(seq, Segment { file, path, held: 0, held_bytes: 0 });
        self.current = seq;
        self.size = 0;
        self.broken = false;
        Ok(())
    }

    /// Deletes segments from the oldest while none of their posts is held (never the current
    /// one): a newer segment may hold the markers that settle an older one's posts.
    fn drop_settled_segments(&mut self) {
        while let Some(oldest) = self.segments.first_entry() {
            if *oldest.key() == self.current || oldest.get().held > 0 {
                return;
            }
            let s = oldest.remove();
            if let Err(err) = fs::remove_file(&s.path) {
                tracing::warn!(%err, path = %s.path.display(), "cannot delete a settled journal segment");
            }
        }
    }

    /// Tells the rest of the server how many posts are held.
    fn publish(&self) {
        crate::metrics::journal_held(self.held.len());
    }

    /// Adds a new post's frame to `buf` (to be written at the end of the current segment) and
    /// holds it; returns its id.
    fn stage_post(&mut self, buf: &mut Vec<u8>, written_at: i64, dest: [u8; 16], packed: &[u8]) -> EntryId {
        let id = self.next_id;
        self.next_id += 1;
        let held = self.frame_post(buf, id, written_at, dest, packed);
        self.hold(id, held);
        id
    }

    /// Adds the frame of post `id` to `buf`; returns where it will be held once `buf` is written.
    fn frame_post(&self, buf: &mut Vec<u8>, id: EntryId, written_at: i64, dest: [u8; 16], packed: &[u8]) -> Held {
        let start = buf.len();
        buf.push(KIND_POST);
        buf.extend_from_slice(&id.to_le_bytes());
        buf.extend_from_slice(&written_at.to_le_bytes());
        buf.extend_from_slice(&dest);
        buf.extend_from_slice(&(packed.len() as u32).to_le_bytes());
        buf.extend_from_slice(packed);
        let c = check(&buf[start..]);
        buf.extend_from_slice(&c);
        let offset = self.size + (start + POST_HEADER) as u64;
        Held { segment: self.current, offset, len: packed.len(), written_at, dest }
    }

    /// Holds post `id` where `h` says.
    fn hold(&mut self, id: EntryId, h: Held) {
        if let Some(s) = self.segments.get_mut(&h.segment) {
            s.held += 1;
            s.held_bytes += h.len as u64;
        }
        self.held.insert(id, h);
    }

    /// Rewrites the posts still held in the oldest segment at the end of the current one, once
    /// there are more than `KEEP_SEGMENTS` and they are a small part of it: a post that keeps
    /// failing would otherwise keep every newer segment on disk (deletion goes oldest first).
    /// The copy keeps the post's id, so a reader that finds both (a crash before the old segment
    /// went) holds it once, and a later marker settles it.
    fn relocate_oldest(&mut self) -> Result<(), JournalError> {
        // Decided from the segment's counters: this runs after every batch.
        let Some((&oldest, seg)) = self.segments.first_key_value() else { return Ok(()) };
        if self.segments.len() <= KEEP_SEGMENTS || oldest == self.current || self.broken || seg.held == 0 || seg.held_bytes > self.segment_bytes / 4 {
            return Ok(());
        }
        let moving: BTreeSet<EntryId> = self.held.iter().filter(|(_, h)| h.segment == oldest).map(|(id, _)| *id).collect();
        let (mut buf, mut moved) = (Vec::new(), Vec::new());
        for e in self.read_held(|id, _| moving.contains(&id))? {
            moved.push((e.id, self.frame_post(&mut buf, e.id, e.written_at, e.dest, &e.packed)));
        }
        self.write(&buf, true)?;
        for (id, h) in moved {
            self.unhold(id);
            self.hold(id, h);
        }
        tracing::info!(segment = oldest, posts = moving.len(), "journal posts still held moved out of the oldest segment");
        Ok(())
    }

    /// Appends `buf` to the current segment, synced when it holds posts.
    fn write(&mut self, buf: &[u8], sync: bool) -> Result<(), JournalError> {
        let s = self.segments.get_mut(&self.current).ok_or(JournalError::SegmentGone(self.current))?;
        let result = s.file.write_all(buf).and_then(|()| if sync { s.file.sync_data() } else { Ok(()) });
        if let Err(e) = result {
            self.broken = true;
            return Err(io(&s.path)(e));
        }
        self.size += buf.len() as u64;
        if sync {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            self.batch(batch);
        }
    }

    /// One batch: every post and marker in one write, one sync; then the answers.
    fn batch(&mut self, batch: Vec<Cmd>) {
        if self.broken
            && let Err(err) = self.start_segment()
        {
            tracing::error!(%err, "cannot start a journal segment");
        }
        let (mut buf, mut appended, mut reads) = (Vec::new(), Vec::new(), Vec::new());
        for cmd in batch {
            match cmd {
                Cmd::Append { reply, .. } if self.broken => {
                    let _ = reply.send(Err(JournalError::Unwritable));
                }
                Cmd::Append { reply, .. } if self.held.len() >= self.max_entries => {
                    let _ = reply.send(Err(JournalError::Full(self.held.len())));
                }
                Cmd::Append { dest, packed, reply } => {
                    let id = self.stage_post(&mut buf, crate::store::now_ms(), dest, &packed);
                    appended.push((id, reply));
                }
                Cmd::Settle(id) => {
                    if !self.unhold(id) {
                        continue;
                    }
                    let start = buf.len();
                    buf.push(KIND_SETTLED);
                    buf.extend_from_slice(&id.to_le_bytes());
                    let c = check(&buf[start..]);
                    buf.extend_from_slice(&c);
                }
                Cmd::Pending { written_before_ms, reply } => reads.push((written_before_ms, reply)),
            }
        }
        let written = if buf.is_empty() { Ok(()) } else { self.write(&buf, !appended.is_empty()) };
        match written {
            Ok(()) => {
                for (id, reply) in appended {
                    let _ = reply.send(Ok(id));
                }
            }
            Err(err) => {
                tracing::error!(%err, posts = appended.len(), "journal write failed");
                for (id, reply) in appended {
                    self.unhold(id);
                    let _ = reply.send(Err(JournalError::Unwritable));
                }
            }
        }
        if self.size >= self.segment_bytes
            && let Err(err) = self.start_segment()
        {
            tracing::error!(%err, "cannot start a journal segment");
        }
        if let Err(err) = self.relocate_oldest() {
            tracing::error!(%err, "cannot move held journal posts out of the oldest segment");
        }
        self.drop_settled_segments();
        self.publish();
        for (cutoff, reply) in reads {
            let _ = reply.send(self.read_pending(cutoff));
        }
    }

    /// Stops holding a post (settled, or never written); whether it was held.
    fn unhold(&mut self, id: EntryId) -> bool {
        let Some(h) = self.held.remove(&id) else { return false };
        if let Some(s) = self.segments.get_mut(&h.segment) {
            s.held = s.held.saturating_sub(1);
            s.held_bytes = s.held_bytes.saturating_sub(h.len as u64);
        }
        true
    }

    fn read_pending(&self, written_before_ms: i64) -> Result<Vec<Entry>, JournalError> {
        self.read_held(|_, h| h.written_at < written_before_ms)
    }

    /// The held posts `which` picks, oldest first.
    fn read_held(&self, which: impl Fn(EntryId, &Held) -> bool) -> Result<Vec<Entry>, JournalError> {
        let mut out = Vec::new();
        for (&id, h) in self.held.iter().filter(|(id, h)| which(**id, h)) {
            let s = self.segments.get(&h.segment).ok_or(JournalError::SegmentGone(h.segment))?;
            let mut packed = vec![0; h.len];
            s.file.read_exact_at(&mut packed, h.offset).map_err(io(&s.path))?;
            out.push(Entry { id, written_at: h.written_at, dest: h.dest, packed });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        std::env::temp_dir().join(format!("meshgroup-journal-{}", rand::random::<u64>()))
    }

    /// The segment files in `dir`, oldest first.
    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> =
            fs::read_dir(dir).expect("dir").filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "journal")).collect();
        files.sort();
        files
    }

    #[tokio::test]
    async fn entries_survive_until_settled_and_come_back_in_order() {
        let dir = dir();
        let j = Journal::open(&dir, 3).expect("open");
        let a = j.append([1; 16], b"first".to_vec()).await.expect("append");
        let b = j.append([2; 16], b"second".to_vec()).await.expect("append");
        drop(j);
        // A reopened journal (a restart) sees what was written, in order.
        let j = Journal::open(&dir, 3).expect("reopen");
        let back = j.pending(i64::MAX).await.expect("pending");
        assert_eq!(
            back.iter().map(|e| (e.id, e.dest, e.packed.clone())).collect::<Vec<_>>(),
            vec![(a, [1; 16], b"first".to_vec()), (b, [2; 16], b"second".to_vec())]
        );
        assert!(j.pending(0).await.expect("pending").is_empty(), "entries written after the cutoff belong to their writer");
        j.settle(a).await;
        j.settle(a).await;
        let c = j.append([3; 16], b"third".to_vec()).await.expect("append");
        assert!(c > b, "ids grow across restarts");
        assert_eq!(j.pending(i64::MAX).await.expect("pending").len(), 2);
        j.append([4; 16], b"fourth".to_vec()).await.expect("append");
        assert!(matches!(j.append([5; 16], b"fifth".to_vec()).await, Err(JournalError::Full(3))));
        j.settle(b).await;
        j.pending(i64::MAX).await.expect("a barrier: the settle is written");
        drop(j);
        let j = Journal::open(&dir, 3).expect("reopen");
        assert_eq!(
            j.pending(i64::MAX).await.expect("pending").iter().map(|e| e.packed.clone()).collect::<Vec<_>>(),
            vec![b"third".to_vec(), b"fourth".to_vec()]
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn posts_written_together_share_one_sync() {
        let dir = dir();
        let j = Arc::new(Journal::open(&dir, 1000).expect("open"));
        let before = j.syncs();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..200u8 {
            let j = j.clone();
            set.spawn(async move { j.append([i; 16], vec![i; 300]).await });
        }
        while let Some(r) = set.join_next().await {
            r.expect("join").expect("append");
        }
        let syncs = j.syncs() - before;
        assert!(syncs < 100, "200 posts in flight together took {syncs} syncs");
        assert_eq!(j.pending(i64::MAX).await.expect("pending").len(), 200);
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_torn_tail_loses_only_what_was_never_acknowledged() {
        let dir = dir();
        let j = Journal::open(&dir, 10).expect("open");
        j.append([1; 16], b"kept".to_vec()).await.expect("append");
        drop(j);
        // A crash in the middle of the next write: half a frame at the end of the segment.
        let seg = segment_files(&dir).pop().expect("a segment");
        let mut f = fs::OpenOptions::new().append(true).open(&seg).expect("open segment");
        f.write_all(&[KIND_POST, 9, 9, 9]).expect("write");
        drop(f);
        // And one post an earlier version left as a file of its own.
        let mut legacy = vec![7; 16];
        legacy.extend_from_slice(b"from the old journal");
        fs::write(dir.join("0000000000000001-0000000000.post"), legacy).expect("write");
        let j = Journal::open(&dir, 10).expect("reopen");
        let held: Vec<_> = j.pending(i64::MAX).await.expect("pending").into_iter().map(|e| (e.dest, e.packed)).collect();
        assert_eq!(held, vec![([1; 16], b"kept".to_vec()), ([7; 16], b"from the old journal".to_vec())]);
        assert!(!dir.join("0000000000000001-0000000000.post").exists(), "the old entry moved into a segment");
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn damage_in_a_segment_costs_only_the_post_it_hit() {
        let dir = dir();
        let j = Journal::open(&dir, 10).expect("open");
        let before = j.append([1; 16], "before".repeat(50).into_bytes()).await.expect("append");
        // A payload that carries a marker settling the post before it: bytes from the network.
        let mut forged = vec![KIND_SETTLED];
        forged.extend_from_slice(&before.to_le_bytes());
        let c = check(&forged);
        forged.extend_from_slice(&c);
        let damaged = ["damaged".repeat(10).into_bytes(), forged, "damaged".repeat(10).into_bytes()].concat();
        j.append([1; 16], damaged).await.expect("append");
        j.append([1; 16], "after".repeat(50).into_bytes()).await.expect("append");
        drop(j);
        let seg = segment_files(&dir).pop().expect("a segment");
        let mut bytes = fs::read(&seg).expect("read");
        let hit = bytes.windows(7).position(|w| w == b"damaged").expect("the second post");
        bytes[hit + 5] ^= 0xff;
        fs::write(&seg, bytes).expect("write");
        let j = Journal::open(&dir, 10).expect("reopen");
        let held: Vec<_> = j.pending(i64::MAX).await.expect("pending").into_iter().map(|e| e.packed).collect();
        assert_eq!(held, vec!["before".repeat(50).into_bytes(), "after".repeat(50).into_bytes()], "the forged marker settles nothing");
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_post_held_for_long_does_not_keep_every_newer_segment() {
        let dir = dir();
        let segments = || segment_files(&dir).len();
        let j = Journal::open_with(&dir, 100, 1000).expect("open");
        let stuck = j.append([1; 16], b"keeps failing".to_vec()).await.expect("append");
        for i in 0..20u8 {
            let id = j.append([2; 16], vec![i; 900]).await.expect("append");
            j.settle(id).await;
        }
        j.pending(i64::MAX).await.expect("barrier");
        assert!(segments() <= KEEP_SEGMENTS + 1, "{} segments on disk for one held post", segments());
        drop(j);
        let j = Journal::open(&dir, 100).expect("reopen");
        let held: Vec<_> = j.pending(i64::MAX).await.expect("pending").into_iter().map(|e| (e.id, e.packed)).collect();
        assert_eq!(held, vec![(stuck, b"keeps failing".to_vec())], "moved, not lost or doubled");
        j.settle(stuck).await;
        j.pending(i64::MAX).await.expect("barrier");
        drop(j);
        assert!(Journal::open(&dir, 100).expect("reopen").pending(i64::MAX).await.expect("pending").is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn settled_segments_are_deleted_oldest_first() {
        let dir = dir();
        let segments = || segment_files(&dir).len();
        let j = Journal::open_with(&dir, 100, 1000).expect("open");
        let first = j.append([1; 16], vec![1; 1000]).await.expect("append");
        let mut later = Vec::new();
        for i in 0..5u8 {
            later.push(j.append([2; 16], vec![i; 1000]).await.expect("append"));
        }
        assert!(segments() >= 5, "each post of 1000 bytes fills a segment of 1000");
        for id in later {
            j.settle(id).await;
        }
        j.pending(i64::MAX).await.expect("barrier");
        assert!(segments() >= 5, "the oldest segment still holds a post: nothing after it goes");
        j.settle(first).await;
        j.pending(i64::MAX).await.expect("barrier");
        assert_eq!(segments(), 1, "all settled: only the current segment is left");
        drop(j);
        let j = Journal::open(&dir, 100).expect("reopen");
        assert!(j.pending(i64::MAX).await.expect("pending").is_empty());
        let _ = fs::remove_dir_all(&dir);
    }
}
