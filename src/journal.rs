//! The post journal: inbound LXMF that the transport proved before we could store it.
//!
//! reticulum-rs proves link packets and Resources (LXMF direct delivery) on receipt, before our
//! commit, and offers no hook to wait. A post in that state is acknowledged to its sender, so it
//! must survive a database outage or a crash until it is committed. Each one is written here
//! first (one file, fsynced, with its directory), and removed once the group has stored it or
//! refused it for good. Whatever is left is replayed: at start-up, and every few seconds while the
//! database is away. Replaying is idempotent, because posts are de-duplicated by message hash.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Journal failures; each keeps the path and the cause.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("journal entry {0} is not a post (shorter than its destination hash)")]
    Malformed(PathBuf),
    #[error("the journal holds {0} posts, its limit; this one is not journaled")]
    Full(usize),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.to_owned(), source }
}

/// One journaled post: its file, when it was written, the group destination it was sent to,
/// the packed LXMF.
#[derive(Debug)]
pub struct Entry {
    pub path: PathBuf,
    pub written_at: i64,
    pub dest: [u8; 16],
    pub packed: Vec<u8>,
}

/// The journal directory. Its operations block (they fsync): run them on the blocking pool.
pub struct Journal {
    dir: PathBuf,
    max_entries: usize,
    next: AtomicU64,
    /// Posts held: counted at open, kept up to date, so an append does not list the directory.
    held: AtomicUsize,
}

impl Journal {
    /// Opens (creating, 0700) the directory; at most `max_entries` posts are held.
    pub fn open(dir: &Path, max_entries: usize) -> Result<Self, JournalError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        let j = Journal { dir: dir.to_owned(), max_entries, next: AtomicU64::new(0), held: AtomicUsize::new(0) };
        j.held.store(j.count()?, Ordering::Relaxed);
        Ok(j)
    }

    /// Writes one post durably before anything else happens to it.
    pub fn append(&self, dest: [u8; 16], packed: &[u8]) -> Result<PathBuf, JournalError> {
        let held = self.len();
        if held >= self.max_entries {
            return Err(JournalError::Full(held));
        }
        // Names sort in arrival order: time, then a counter for posts of the same millisecond.
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("{:016}-{n:010}.post", crate::store::now_ms().max(0));
        let path = self.dir.join(name);
        let tmp = path.with_extension("tmp");
        {
            let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
            f.write_all(&dest).map_err(io(&tmp))?;
            f.write_all(packed).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        // The rename makes the entry whole or absent; syncing the directory makes it stay.
        fs::rename(&tmp, &path).map_err(io(&path))?;
        fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        self.held.fetch_add(1, Ordering::Relaxed);
        Ok(path)
    }

    /// Forgets a post that the group stored or refused for good.
    pub fn remove(&self, path: &Path) -> Result<(), JournalError> {
        match fs::remove_file(path) {
            Ok(()) => {
                let _ = self.held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(path)(e)),
        }
    }

    /// Posts held that were written before `written_before_ms`, oldest first (later ones may
    /// still be in the hands of the task that wrote them). An entry that is not a post (cut short
    /// by a full disk) is logged and removed; it never blocks the others.
    pub fn pending(&self, written_before_ms: i64) -> Result<Vec<Entry>, JournalError> {
        let mut paths: Vec<(i64, PathBuf)> = fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "post"))
            .filter_map(|p| written_at(&p).map(|t| (t, p)))
            .filter(|(t, _)| *t < written_before_ms)
            .collect();
        paths.sort();
        let mut out = Vec::with_capacity(paths.len());
        for (written_at, path) in paths {
            let bytes = fs::read(&path).map_err(io(&path))?;
            match bytes.get(..16).and_then(|d| <[u8; 16]>::try_from(d).ok()) {
                Some(dest) => out.push(Entry { path, written_at, dest, packed: bytes[16..].to_vec() }),
                None => {
                    tracing::warn!(err = %JournalError::Malformed(path.clone()), "journal entry removed");
                    self.remove(&path)?;
                }
            }
        }
        Ok(out)
    }

    /// Posts held now.
    pub fn len(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Whether no post is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Posts in the directory, counted once at open.
    fn count(&self) -> Result<usize, JournalError> {
        Ok(fs::read_dir(&self.dir).map_err(io(&self.dir))?.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "post")).count())
    }
}

/// The time an entry was written, from its name.
fn written_at(path: &Path) -> Option<i64> {
    path.file_name()?.to_str()?.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_until_removed_and_come_back_in_order() {
        let dir = std::env::temp_dir().join(format!("meshgroup-journal-{}", rand::random::<u64>()));
        let j = Journal::open(&dir, 3).expect("open");
        let a = j.append([1; 16], b"first").expect("append");
        let b = j.append([2; 16], b"second").expect("append");
        // An entry cut short (a full disk at the crash) is found at the restart too.
        std::fs::write(dir.join("0000000000000001-0000000099.post"), b"short").expect("write");
        // A reopened journal (a restart) sees what was written.
        let j = Journal::open(&dir, 3).expect("reopen");
        let held = j.pending(i64::MAX).expect("pending: a cut-short entry is removed, not an error");
        assert_eq!(held.iter().map(|e| (e.dest, e.packed.clone())).collect::<Vec<_>>(), vec![([1; 16], b"first".to_vec()), ([2; 16], b"second".to_vec())]);
        assert!(j.pending(0).expect("pending").is_empty(), "entries written after the cutoff belong to their writer");
        j.remove(&a).expect("remove");
        j.remove(&a).expect("removing twice is fine");
        assert_eq!(j.len(), 1);
        j.append([3; 16], b"third").expect("append");
        j.append([4; 16], b"fourth").expect("append");
        assert!(matches!(j.append([5; 16], b"fifth"), Err(JournalError::Full(3))));
        j.remove(&b).expect("remove");
        let _ = fs::remove_dir_all(&dir);
    }
}
