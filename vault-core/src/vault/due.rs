//! When each tenant's background work is next due: one index across tenants, so that a
//! maintenance round costs what is due, not what exists.
//!
//! Four units of work are per tenant ([`Unit`]): the key sweep (rotation by age), the re-wrap
//! job, expiry notices and feed pruning. Each (unit, tenant) has at most one due time; a round
//! takes the units whose time has come, runs them, and each run puts back the time its unit is
//! next due, read from the store (the earliest alarm, the oldest feed event plus the
//! retention, the current KEK's age limit), or nothing when nothing will be due until a write
//! says so. Writes that make work due say so ([`DueIndex::note`]: an alarm set, a feed event, a
//! version scheduled for retirement, a KEK added). A note only ever brings a time forward, and a
//! round takes a unit out before it reads the store, so a note made while the unit runs is never
//! lost: either the run reads the write, or the note stays.
//!
//! The index lives in memory. After an unseal (a new keyring) or a reset (a node that became
//! active, whose view may predate another node's writes), it does not know the tenants: it
//! *discovers* them, a page of tenant records per round, and marks every unit of each due at
//! once. Start-up does no work per tenant; a vault of 10,000 tenants is discovered in
//! `10,000 / DISCOVERY_PAGE` rounds.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use crate::names::TenantId;

/// A tenant's unit of background work (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Unit {
    Sweep,
    Rewrap,
    Expiry,
    FeedPruning,
}

impl Unit {
    pub(super) const ALL: [Unit; 4] = [Unit::Sweep, Unit::Rewrap, Unit::Expiry, Unit::FeedPruning];

    fn index(self) -> usize {
        match self {
            Unit::Sweep => 0,
            Unit::Rewrap => 1,
            Unit::Expiry => 2,
            Unit::FeedPruning => 3,
        }
    }
}

/// Tenant records read per round while the index discovers the tenants.
pub(super) const DISCOVERY_PAGE: usize = 512;

/// The index (see the module documentation).
#[derive(Default)]
pub(super) struct DueIndex {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Per unit: (due time, tenant), earliest first.
    by_time: [BTreeSet<(i64, TenantId)>; 4],
    /// Per unit: each tenant's due time (the entry in `by_time`).
    by_tenant: [HashMap<TenantId, i64>; 4],
    /// The serial of the keyring the index was built under: another one means an unseal, and
    /// the index starts over.
    keyring: u64,
    /// `Some(next key)` while tenant records remain to be discovered; `None` once all were.
    discovery: Option<Vec<u8>>,
    /// Moves on at every start-over: a page read before one is not applied after it.
    epoch: u64,
}

impl Inner {
    fn clear(&mut self) {
        for set in &mut self.by_time {
            set.clear();
        }
        for map in &mut self.by_tenant {
            map.clear();
        }
        self.discovery = Some(crate::schema::TENANT_PREFIX.to_vec());
        self.epoch = self.epoch.wrapping_add(1);
    }

    fn note(&mut self, unit: Unit, tenant: TenantId, at: i64) {
        let index = unit.index();
        match self.by_tenant[index].get(&tenant).copied() {
            Some(noted) if noted <= at => {}
            noted => {
                if let Some(noted) = noted {
                    self.by_time[index].remove(&(noted, tenant));
                }
                self.by_time[index].insert((at, tenant));
                self.by_tenant[index].insert(tenant, at);
            }
        }
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl DueIndex {
    /// Unit `unit` of `tenant` is due at `at` at the latest (an earlier time already noted
    /// stands).
    pub(super) fn note(&self, unit: Unit, tenant: TenantId, at: i64) {
        lock(&self.inner).note(unit, tenant, at);
    }

    /// Takes out up to `max` tenants whose unit `unit` is due at `now`, earliest first.
    pub(super) fn take_due(&self, unit: Unit, now: i64, max: usize) -> Vec<TenantId> {
        let mut inner = lock(&self.inner);
        let index = unit.index();
        let mut taken = Vec::new();
        while taken.len() < max {
            let Some(&(at, tenant)) = inner.by_time[index].first() else {
                break;
            };
            if at > now {
                break;
            }
            inner.by_time[index].pop_first();
            inner.by_tenant[index].remove(&tenant);
            taken.push(tenant);
        }
        taken
    }

    /// Where discovery stands for the keyring of serial `keyring`: starts over if that is not
    /// the keyring the index was built under. `None`: every tenant is known; else the epoch to
    /// hand back to [`DueIndex::discovered`] and the key to read from.
    pub(super) fn discovery(&self, keyring: u64) -> Option<(u64, Vec<u8>)> {
        let mut inner = lock(&self.inner);
        if inner.keyring != keyring {
            inner.clear();
            inner.keyring = keyring;
        }
        let epoch = inner.epoch;
        inner.discovery.clone().map(|from| (epoch, from))
    }

    /// A page of discovery read in `epoch`: every unit of each of `tenants` is due at `now`, and
    /// discovery goes on at `next` (`None`: done). Nothing happens if the index started over
    /// since (its own discovery reads the page again).
    pub(super) fn discovered(
        &self,
        epoch: u64,
        tenants: &[TenantId],
        now: i64,
        next: Option<Vec<u8>>,
    ) {
        let mut inner = lock(&self.inner);
        if inner.epoch != epoch {
            return;
        }
        for tenant in tenants {
            for unit in Unit::ALL {
                inner.note(unit, *tenant, now);
            }
        }
        inner.discovery = next;
    }

    /// Forgets every due time and discovers the tenants again (a node that became active).
    pub(super) fn reset(&self) {
        lock(&self.inner).clear();
    }

    /// Due times held, over all units (tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        lock(&self.inner).by_time.iter().map(BTreeSet::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(n: u8) -> TenantId {
        TenantId::parse_hex(&format!("{n:016x}")).expect("id")
    }

    #[test]
    fn a_note_only_brings_a_due_time_forward_and_taking_removes_it() {
        let due = DueIndex::default();
        due.note(Unit::Expiry, tenant(1), 100);
        due.note(Unit::Expiry, tenant(1), 200);
        assert!(due.take_due(Unit::Expiry, 99, 10).is_empty());
        due.note(Unit::Expiry, tenant(1), 50);
        due.note(Unit::FeedPruning, tenant(2), 10);
        assert_eq!(due.take_due(Unit::Expiry, 60, 10), vec![tenant(1)]);
        assert!(due.take_due(Unit::Expiry, 1000, 10).is_empty());
        assert_eq!(due.take_due(Unit::FeedPruning, 10, 10), vec![tenant(2)]);
        assert_eq!(due.len(), 0);
    }

    #[test]
    fn taking_is_earliest_first_and_bounded() {
        let due = DueIndex::default();
        for n in 0..10u8 {
            due.note(Unit::Sweep, tenant(n), 100 - i64::from(n));
        }
        assert_eq!(
            due.take_due(Unit::Sweep, 100, 3),
            vec![tenant(9), tenant(8), tenant(7)]
        );
        assert_eq!(due.len(), 7);
    }

    #[test]
    fn another_keyring_or_a_reset_starts_discovery_over() {
        let due = DueIndex::default();
        let (epoch, start) = due.discovery(1).expect("discovery");
        due.discovered(epoch, &[tenant(1)], 0, None);
        assert_eq!(due.discovery(1), None);
        assert_eq!(due.len(), 4, "every unit of the discovered tenant");
        let (second, again) = due.discovery(2).expect("a new keyring discovers again");
        assert_eq!(again, start);
        assert_eq!(due.len(), 0);
        // A page read before a reset is not applied after it: the reset's discovery reads it.
        due.reset();
        due.discovered(second, &[tenant(2)], 0, None);
        assert_eq!(due.len(), 0);
        assert!(due.discovery(2).is_some());
    }
}
