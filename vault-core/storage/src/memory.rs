//! The in-memory backend: the reference the conformance suite is written against, and the
//! backend for unit tests. Nothing survives the process.

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
    sync::RwLock,
};

use crate::{Entry, Op, Snapshot, Space, Storage, StorageError, WriteBatch};

type Spaces = HashMap<Space, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Default)]
pub struct MemoryStorage {
    spaces: RwLock<Spaces>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        MemoryStorage::default()
    }
}

fn poisoned() -> StorageError {
    StorageError("memory storage lock poisoned".into())
}

/// A copy of the maps: the in-memory store is small by nature.
struct MemorySnapshot(Spaces);

impl Snapshot for MemorySnapshot {
    fn scan(&self, space: Space, start: &[u8], limit: usize) -> Result<Vec<Entry>, StorageError> {
        Ok(self.0.get(&space).map_or_else(Vec::new, |map| {
            map.range::<[u8], _>((Bound::Included(start), Bound::Unbounded))
                .take(limit)
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        }))
    }
}

impl Storage for MemoryStorage {
    fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>, StorageError> {
        let spaces = self.spaces.read().map_err(|_| poisoned())?;
        Ok(Box::new(MemorySnapshot(spaces.clone())))
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let spaces = self.spaces.read().map_err(|_| poisoned())?;
        Ok(spaces.get(&space).and_then(|map| map.get(key)).cloned())
    }

    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let spaces = self.spaces.read().map_err(|_| poisoned())?;
        let Some(map) = spaces.get(&space) else {
            return Ok(Vec::new());
        };
        let start = if start < prefix { prefix } else { start };
        Ok(map
            .range::<[u8], _>((Bound::Included(start), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        crate::nowait::refuse()?;
        let mut spaces = self.spaces.write().map_err(|_| poisoned())?;
        for op in batch.ops {
            match op {
                Op::Put { space, key, value } => {
                    spaces.entry(space).or_default().insert(key, value);
                }
                Op::Delete { space, key } => {
                    if let Some(map) = spaces.get_mut(&space) {
                        map.remove(&key);
                    }
                }
            }
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
