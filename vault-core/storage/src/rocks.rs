//! The embedded RocksDB backend: one column family per [`Space`].
//!
//! Every write is a `WriteBatch` with `sync = true`: RocksDB group-commits concurrent writers
//! (one leader fsyncs the WAL for the whole group), so durability does not serialize callers.

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, BottommostLevelCompaction, Cache, ColumnFamilyDescriptor, CompactOptions,
    DB, DBCompressionType, Direction, ErrorKind, FlushOptions, IteratorMode, Options, ReadOptions,
    ReadTier, WriteOptions,
};

use crate::{
    Entry, Op, Snapshot, Space, Storage, StorageError, StorageStats, WriteBatch, prefix_end,
};

pub struct RocksStorage {
    db: DB,
}

/// What one database may hold in memory: its memory tables together, and its block cache.
#[derive(Clone, Copy)]
struct Memory {
    write_buffers: usize,
    block_cache: usize,
}

impl Memory {
    /// The data store: secrets, their metadata, tokens, the feed.
    const DATA: Memory = Memory {
        write_buffers: 32 << 20,
        block_cache: 32 << 20,
    };
    /// The key store: a few sealed keys per tenant.
    const KEYS: Memory = Memory {
        write_buffers: 8 << 20,
        block_cache: 4 << 20,
    };
}

fn error(context: &str, e: rocksdb::Error) -> StorageError {
    StorageError(format!("rocksdb {context}: {e}"))
}

impl RocksStorage {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        Self::open_with(dir, DBCompressionType::Lz4, Memory::DATA)
    }

    /// Opens the key store: uncompressed, since it holds only small sealed blobs (random bytes
    /// that do not compress), and uncompressed files can be searched byte for byte to show that
    /// a destroyed key is gone from every one of them.
    pub fn open_key_store(dir: &Path) -> Result<Self, StorageError> {
        Self::open_with(dir, DBCompressionType::None, Memory::KEYS)
    }

    fn open_with(
        dir: &Path,
        compression: DBCompressionType,
        memory: Memory,
    ) -> Result<Self, StorageError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // Keys and values are small; keep the memory footprint modest for a 2-core box.
        options.set_max_background_jobs(2);
        options.set_keep_log_file_num(4);
        options.set_compression_type(compression);
        // Memory: every memory table of the database within one budget (by default each
        // column family could hold two of 64 MiB), and one block cache for all column families
        // (by default each has its own). Index and filter blocks stay with their table files,
        // outside the cache: a point read never waits for them to be read again.
        options.set_db_write_buffer_size(memory.write_buffers);
        let cache = Cache::new_lru_cache(memory.block_cache);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        // A point read of a key a table file does not hold skips the file (about 1.25 bytes of
        // memory per key).
        table.set_bloom_filter(10.0, false);
        let families = Space::ALL.iter().map(|space| {
            let mut family = Options::default();
            family.set_compression_type(compression);
            family.set_write_buffer_size(memory.write_buffers / 2);
            family.set_block_based_table_factory(&table);
            ColumnFamilyDescriptor::new(space.name(), family)
        });
        let db = DB::open_cf_descriptors(&options, dir, families).map_err(|e| {
            let text = e.to_string();
            if text.contains("lock") {
                StorageError(format!(
                    "{} is in use by another process ({text})",
                    dir.display()
                ))
            } else {
                error(&format!("open {}", dir.display()), e)
            }
        })?;
        Ok(RocksStorage { db })
    }

    fn family(&self, space: Space) -> Result<&rocksdb::ColumnFamily, StorageError> {
        self.db
            .cf_handle(space.name())
            .ok_or_else(|| StorageError(format!("column family {} missing", space.name())))
    }
}

/// A RocksDB snapshot: reads through it see the sequence number it was taken at.
struct RocksSnapshot<'a> {
    storage: &'a RocksStorage,
    snapshot: rocksdb::Snapshot<'a>,
}

impl Snapshot for RocksSnapshot<'_> {
    fn scan(&self, space: Space, start: &[u8], limit: usize) -> Result<Vec<Entry>, StorageError> {
        let mut read = ReadOptions::default();
        // A backup reads everything once: keep it out of the block cache.
        read.fill_cache(false);
        let iterator = self.snapshot.iterator_cf_opt(
            self.storage.family(space)?,
            read,
            IteratorMode::From(start, Direction::Forward),
        );
        let mut entries = Vec::new();
        for item in iterator.take(limit) {
            let (key, value) = item.map_err(|e| error("snapshot scan", e))?;
            entries.push((key.into_vec(), value.into_vec()));
        }
        Ok(entries)
    }
}

impl Storage for RocksStorage {
    fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>, StorageError> {
        crate::nowait::refuse()?;
        Ok(Box::new(RocksSnapshot {
            storage: self,
            snapshot: self.db.snapshot(),
        }))
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if crate::nowait::active() {
            // Memory tables and the block cache only: RocksDB answers `Incomplete` where it
            // would read a file.
            let mut read = ReadOptions::default();
            read.set_read_tier(ReadTier::BlockCache);
            return match self.db.get_cf_opt(self.family(space)?, key, &read) {
                Err(e) if e.kind() == ErrorKind::Incomplete => Err(StorageError::would_wait()),
                other => other.map_err(|e| error("get", e)),
            };
        }
        self.db
            .get_cf(self.family(space)?, key)
            .map_err(|e| error("get", e))
    }

    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        crate::nowait::refuse()?;
        let start = if start < prefix { prefix } else { start };
        let mut read = ReadOptions::default();
        if let Some(end) = prefix_end(prefix) {
            read.set_iterate_upper_bound(end);
        }
        let iterator = self.db.iterator_cf_opt(
            self.family(space)?,
            read,
            IteratorMode::From(start, Direction::Forward),
        );
        let mut entries = Vec::new();
        for item in iterator {
            if entries.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(|e| error("scan", e))?;
            if !key.starts_with(prefix) {
                break;
            }
            entries.push((key.into_vec(), value.into_vec()));
        }
        Ok(entries)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        crate::nowait::refuse()?;
        let mut rocks_batch = rocksdb::WriteBatch::default();
        for op in &batch.ops {
            match op {
                Op::Put { space, key, value } => {
                    rocks_batch.put_cf(self.family(*space)?, key, value)
                }
                Op::Delete { space, key } => rocks_batch.delete_cf(self.family(*space)?, key),
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(rocks_batch, &options)
            .map_err(|e| error("write", e))
    }

    fn kind(&self) -> &'static str {
        "rocksdb"
    }

    /// Every column family's memory table to table files, waiting for it.
    fn flush(&self) -> Result<(), StorageError> {
        crate::nowait::refuse()?;
        let mut flush = FlushOptions::default();
        flush.set_wait(true);
        let families = Space::ALL
            .iter()
            .map(|space| self.family(*space))
            .collect::<Result<Vec<_>, _>>()?;
        self.db
            .flush_cfs_opt(&families, &flush)
            .map_err(|e| error("flush", e))
    }

    /// Flushes every column family (so the write-ahead log holding the deleted entries becomes
    /// obsolete and is removed), then compacts each down to the bottom level, which rewrites
    /// every table file without the deleted entries and their tombstones.
    fn compact(&self) -> Result<(), StorageError> {
        self.flush()?;
        let families = Space::ALL
            .iter()
            .map(|space| self.family(*space))
            .collect::<Result<Vec<_>, _>>()?;
        let mut options = CompactOptions::default();
        options.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        options.set_exclusive_manual_compaction(true);
        for family in &families {
            self.db
                .compact_range_cf_opt(*family, None::<&[u8]>, None::<&[u8]>, &options);
        }
        self.db.flush_wal(true).map_err(|e| error("flush wal", e))
    }

    /// RocksDB's own properties, summed over the column families.
    fn stats(&self) -> StorageStats {
        let sum = |property: &str| {
            let mut total = 0u64;
            for space in Space::ALL {
                let family = self.family(space).ok()?;
                let value = self.db.property_int_value_cf(family, property).ok()??;
                total = total.saturating_add(value);
            }
            Some(total)
        };
        StorageStats {
            table_bytes: sum("rocksdb.total-sst-files-size"),
            memtable_bytes: sum("rocksdb.cur-size-all-mem-tables"),
            pending_compaction_bytes: sum("rocksdb.estimate-pending-compaction-bytes"),
            running_compactions: self
                .db
                .property_int_value("rocksdb.num-running-compactions")
                .ok()
                .flatten(),
            keys: sum("rocksdb.estimate-num-keys"),
        }
    }
}
