//! What survives a restart, in one [redb](https://docs.rs/redb) file `chat.redb` under the
//! data directory: undelivered private messages, block lists and login history.
//!
//! Every write is its own transaction, committed with redb's default durability (fsync)
//! before the caller acts on it: a message is acknowledged to its sender only after its
//! commit, and leaves the store only after its recipient's receipt.

// redb's error is large (160 bytes); these results are per chat operation and errors are disk
// faults, so the size costs nothing that matters.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// (recipient, message id) → [`Stored`] as JSON.
const PENDING: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("pending");
/// (blocker, blocked) → ().
const BLOCKS: TableDefinition<'_, (&str, &str), ()> = TableDefinition::new("blocks");
/// user → when they last logged out (ms since the epoch).
const LAST_SEEN: TableDefinition<'_, &str, u64> = TableDefinition::new("last_seen");
/// user → when they logged in (ms), present while logged in.
const ONLINE: TableDefinition<'_, &str, u64> = TableDefinition::new("online");
/// Counters: `next_id` of messages.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// The database file's name inside the data directory.
pub const FILE_NAME: &str = "chat.redb";

/// A stored private message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Sender.
    pub from: String,
    /// Text.
    pub text: String,
    /// When it was sent (ms since the epoch).
    pub at: u64,
}

/// Why the store cannot be opened or written.
#[derive(Debug)]
pub enum StoreError {
    /// The data directory cannot be created.
    CreateDir(PathBuf, std::io::Error),
    /// The data directory is not writable.
    NotWritable(PathBuf, std::io::Error),
    /// Another process has the database open.
    InUse(PathBuf),
    /// Any other database error.
    Db(PathBuf, redb::Error),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::CreateDir(dir, e) => write!(
                f,
                "cannot create the data directory {} (--data): {e}; create it yourself or choose a writable place with --data",
                dir.display()
            ),
            StoreError::NotWritable(dir, e) => write!(
                f,
                "the data directory {} (--data) is not writable: {e}; fix its permissions or choose another with --data",
                dir.display()
            ),
            StoreError::InUse(file) => write!(
                f,
                "the database {} is in use by another process (another chat-server?); stop it or choose another directory with --data",
                file.display()
            ),
            StoreError::Db(file, e) => write!(
                f,
                "database {}: {e}; check the disk, or move the file away to start empty",
                file.display()
            ),
        }
    }
}

impl std::error::Error for StoreError {}

/// The embedded database.
pub struct Store {
    db: Database,
    file: PathBuf,
    next_id: u64,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("file", &self.file)
            .field("next_id", &self.next_id)
            .finish()
    }
}

/// What the server keeps in memory, read once at startup.
#[derive(Debug, Default)]
pub struct Loaded {
    /// blocker → the users they block.
    pub blocks: HashMap<String, BTreeSet<String>>,
    /// user → last logout (ms).
    pub last_seen: HashMap<String, u64>,
}

impl Store {
    /// Opens (creating if needed) the database in `dir`. Users the database still shows as
    /// online (the server stopped without logging them out) are logged out as of `now`.
    pub fn open(dir: &Path, now: u64) -> Result<(Store, Loaded), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::CreateDir(dir.to_owned(), e))?;
        // redb's own error for a read-only directory is less clear than this probe's.
        let probe = dir.join(".chat-write-test");
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| StoreError::NotWritable(dir.to_owned(), e))?;
        let file = dir.join(FILE_NAME);
        let db = match Database::create(&file) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::InUse(file)),
            Err(e) => return Err(StoreError::Db(file, e.into())),
        };
        let mut store = Store {
            db,
            file,
            next_id: 1,
        };
        let loaded = store.init(now).map_err(|e| store.err(e))?;
        Ok((store, loaded))
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Db(self.file.clone(), e.into())
    }

    fn init(&mut self, now: u64) -> Result<Loaded, redb::Error> {
        let tx = self.db.begin_write()?;
        let mut loaded = Loaded::default();
        {
            tx.open_table(PENDING)?;
            let mut meta = tx.open_table(META)?;
            self.next_id = meta.get("next_id")?.map_or(1, |v| v.value());
            let blocks = tx.open_table(BLOCKS)?;
            for entry in blocks.iter()? {
                let (key, _) = entry?;
                let (blocker, blocked) = key.value();
                loaded
                    .blocks
                    .entry(blocker.to_owned())
                    .or_default()
                    .insert(blocked.to_owned());
            }
            let mut online = tx.open_table(ONLINE)?;
            let mut last_seen = tx.open_table(LAST_SEEN)?;
            let stale: Vec<String> = online
                .iter()?
                .map(|e| e.map(|(k, _)| k.value().to_owned()))
                .collect::<Result<_, _>>()?;
            for user in &stale {
                online.remove(user.as_str())?;
                last_seen.insert(user.as_str(), now)?;
            }
            for entry in last_seen.iter()? {
                let (user, at) = entry?;
                loaded.last_seen.insert(user.value().to_owned(), at.value());
            }
            meta.insert("next_id", self.next_id)?;
        }
        tx.commit()?;
        Ok(loaded)
    }

    /// Stores a private message for `to`; returns its id once committed.
    pub fn store_message(&mut self, to: &str, msg: &Stored) -> Result<u64, StoreError> {
        let id = self.next_id;
        let json = serde_json::to_vec(msg).expect("a message serializes");
        let run = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                tx.open_table(PENDING)?.insert((to, id), json.as_slice())?;
                tx.open_table(META)?.insert("next_id", id + 1)?;
            }
            tx.commit()?;
            Ok(())
        };
        run().map_err(|e| self.err(e))?;
        self.next_id = id + 1;
        Ok(id)
    }

    /// The messages waiting for `user`, oldest first.
    pub fn pending(&self, user: &str) -> Result<Vec<(u64, Stored)>, StoreError> {
        let run = || -> Result<Vec<(u64, Stored)>, redb::Error> {
            let tx = self.db.begin_read()?;
            let table = tx.open_table(PENDING)?;
            let mut out = Vec::new();
            for entry in table.range((user, 0)..=(user, u64::MAX))? {
                let (key, value) = entry?;
                let (_, id) = key.value();
                // A record this version cannot read is skipped, not fatal.
                if let Ok(msg) = serde_json::from_slice(value.value()) {
                    out.push((id, msg));
                }
            }
            Ok(out)
        };
        run().map_err(|e| self.err(e))
    }

    /// Forgets delivered messages.
    pub fn delete_messages(&mut self, delivered: &[(String, u64)]) -> Result<(), StoreError> {
        if delivered.is_empty() {
            return Ok(());
        }
        let run = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                let mut table = tx.open_table(PENDING)?;
                for (user, id) in delivered {
                    table.remove((user.as_str(), *id))?;
                }
            }
            tx.commit()?;
            Ok(())
        };
        run().map_err(|e| self.err(e))
    }

    /// Records that `blocker` blocks (or no longer blocks) `blocked`.
    pub fn set_block(
        &mut self,
        blocker: &str,
        blocked: &str,
        block: bool,
    ) -> Result<(), StoreError> {
        let run = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                let mut table = tx.open_table(BLOCKS)?;
                if block {
                    table.insert((blocker, blocked), ())?;
                } else {
                    table.remove((blocker, blocked))?;
                }
            }
            tx.commit()?;
            Ok(())
        };
        run().map_err(|e| self.err(e))
    }

    /// Records a login.
    pub fn logged_in(&mut self, user: &str, at: u64) -> Result<(), StoreError> {
        let run = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            tx.open_table(ONLINE)?.insert(user, at)?;
            tx.commit()?;
            Ok(())
        };
        run().map_err(|e| self.err(e))
    }

    /// Records logouts (one transaction for all).
    pub fn logged_out(&mut self, users: &[String], at: u64) -> Result<(), StoreError> {
        if users.is_empty() {
            return Ok(());
        }
        let run = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            {
                let mut online = tx.open_table(ONLINE)?;
                let mut last_seen = tx.open_table(LAST_SEEN)?;
                for user in users {
                    online.remove(user.as_str())?;
                    last_seen.insert(user.as_str(), at)?;
                }
            }
            tx.commit()?;
            Ok(())
        };
        run().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chat-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn everything_survives_reopening() {
        let dir = temp_dir("reopen");
        {
            let (mut store, loaded) = Store::open(&dir, 1).unwrap();
            assert!(loaded.blocks.is_empty());
            let msg = |text: &str| Stored {
                from: "alice".into(),
                text: text.into(),
                at: 5,
            };
            let first = store.store_message("bob", &msg("one")).unwrap();
            let second = store.store_message("bob", &msg("two")).unwrap();
            store.store_message("bobby", &msg("other")).unwrap();
            assert!(second > first);
            store.set_block("bob", "carol", true).unwrap();
            store.set_block("bob", "dave", true).unwrap();
            store.set_block("bob", "dave", false).unwrap();
            store.logged_in("alice", 10).unwrap();
            store.logged_in("bob", 10).unwrap();
            store.logged_out(&["bob".into()], 20).unwrap();
        }
        let (store, loaded) = Store::open(&dir, 30).unwrap();
        let pending = store.pending("bob").unwrap();
        let texts: Vec<&str> = pending.iter().map(|(_, m)| m.text.as_str()).collect();
        assert_eq!(texts, ["one", "two"]);
        assert_eq!(loaded.blocks["bob"], BTreeSet::from(["carol".to_owned()]));
        assert_eq!(loaded.last_seen["bob"], 20);
        // Still online when the server stopped: logged out as of the restart.
        assert_eq!(loaded.last_seen["alice"], 30);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_opener_is_told_the_database_is_in_use() {
        let dir = temp_dir("inuse");
        let (_store, _) = Store::open(&dir, 1).unwrap();
        let e = Store::open(&dir, 1).unwrap_err().to_string();
        assert!(e.contains("in use"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
