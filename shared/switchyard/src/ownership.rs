//! One owner per set of local files: an exclusive OS lock (`flock`) on a lock file, held for
//! the owner's lifetime and released by the kernel when the owner exits, however it exits.
//!
//! `switchyard up` owns its data directory this way, and a service owns its SQLite file: two
//! processes writing one SQLite file (or one JetStream store) behind each other's back lose
//! data, so the second refuses to start and names the first. Within one process the lock is
//! shared: several instances of a service in one process (as tests run them) coordinate through
//! the process's own write slot. Postgres needs no such lock: many instances on one database
//! are the point.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

/// Why the files could not be owned.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// Another live process holds the lock.
    #[error("{what} is in use by another process ({owner}); lock file {path}")]
    Held {
        /// What the lock guards, e.g. "database /data/billing.db".
        what: String,
        /// What the owner wrote into the lock file (its pid and role).
        owner: String,
        /// The lock file.
        path: String,
    },
    /// The lock file could not be opened or locked.
    #[error("failed to lock {path}")]
    Io {
        /// The lock file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl OwnershipError {
    /// The owner's description, when another process holds the lock.
    pub fn owner(&self) -> Option<&str> {
        match self {
            OwnershipError::Held { owner, .. } => Some(owner),
            OwnershipError::Io { .. } => None,
        }
    }
}

/// A held lock; the lock is released when the last clone in this process is dropped (or the
/// process exits).
#[derive(Debug)]
pub struct Ownership {
    path: PathBuf,
    _file: File,
}

impl Ownership {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Locks held by this process, so that a second owner in the same process shares the first's.
fn held() -> &'static Mutex<HashMap<PathBuf, Weak<Ownership>>> {
    static HELD: std::sync::OnceLock<Mutex<HashMap<PathBuf, Weak<Ownership>>>> = std::sync::OnceLock::new();
    HELD.get_or_init(Default::default)
}

/// Takes the exclusive lock on `lock_path` (created when missing) for `what`, and writes
/// `description` (e.g. "billing-service pid 4242") into it for whoever finds it held.
///
/// Fails with [`OwnershipError::Held`] at once, without waiting, when another process holds it.
pub fn acquire(lock_path: &Path, what: &str, description: &str) -> Result<Arc<Ownership>, OwnershipError> {
    let io = |source| OwnershipError::Io { path: lock_path.display().to_string(), source };
    let key = absolute(lock_path).map_err(io)?;
    let mut held = held().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(existing) = held.get(&key).and_then(Weak::upgrade) {
        return Ok(existing);
    }
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(lock_path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let owner = std::fs::read_to_string(lock_path).unwrap_or_default().trim().to_string();
            let owner = if owner.is_empty() { "an unknown process".to_string() } else { owner };
            return Err(OwnershipError::Held {
                what: what.to_string(),
                owner,
                path: lock_path.display().to_string(),
            });
        }
        Err(TryLockError::Error(source)) => return Err(io(source)),
    }
    file.set_len(0).map_err(io)?;
    file.write_all(format!("{description}\n").as_bytes()).map_err(io)?;
    let ownership = Arc::new(Ownership { path: key.clone(), _file: file });
    held.retain(|_, weak| weak.strong_count() > 0);
    held.insert(key, Arc::downgrade(&ownership));
    Ok(ownership)
}

/// The path made absolute through its (existing) parent directory, so that two spellings of
/// one file are one key.
fn absolute(path: &Path) -> std::io::Result<PathBuf> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.canonicalize()?,
        _ => std::env::current_dir()?,
    };
    Ok(match path.file_name() {
        Some(name) => parent.join(name),
        None => parent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_process_is_refused_and_named_and_the_same_process_shares() {
        let dir = std::env::temp_dir().join(format!("switchyard-ownership-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("x.lock");
        let first = acquire(&path, "the thing", "test pid 1").expect("first owner");
        // The same process: shared.
        let again = acquire(&dir.join(".").join("x.lock"), "the thing", "test pid 1").expect("shared");
        assert!(Arc::ptr_eq(&first, &again));
        // Another open file description, as another process would have: refused.
        let other = OpenOptions::new().read(true).write(true).open(&path).expect("open");
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "test pid 1\n");
        drop(first);
        drop(again);
        // Released with the last clone.
        other.try_lock().expect("free after the owner is gone");
        drop(other);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
