//! The vault's two stores as two types, so that they cannot be swapped: a [`KeyStore`] where a
//! [`DataStore`] is expected does not compile.
//!
//! The key store holds the seal configuration, the sealed root key, the sealed system keys,
//! every sealed KEK version and the wrapped named keys. The data store holds everything else:
//! tenants, tokens, policies, secrets (ciphertext), the feed and webhooks. A copy of the data
//! store therefore carries no key material, and a backup of one alone opens nothing.

use std::{ops::Deref, sync::Arc};

use crate::storage::Storage;

/// The data store (see the module documentation).
#[derive(Clone)]
pub struct DataStore(Arc<dyn Storage>);

/// The key store (see the module documentation).
#[derive(Clone)]
pub struct KeyStore(Arc<dyn Storage>);

impl DataStore {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        DataStore(storage)
    }
}

impl KeyStore {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        KeyStore(storage)
    }
}

impl Deref for DataStore {
    type Target = dyn Storage;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}

impl Deref for KeyStore {
    type Target = dyn Storage;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}
