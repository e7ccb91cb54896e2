//! Background work as independent tasks: the key sweep (rotation by age, scheduling past the
//! live limit), the re-wrap jobs, crypto-shredding, the named keys' schedules, expiry notices,
//! feed pruning and the purge of dead tokens.
//!
//! Each [`Task`] is its own unit with its own [`TaskReport`]: [`Vault::run_task`] runs one,
//! [`Vault::maintain`] runs every task in turn and adds up their reports. A task that fails
//! (for one tenant, or as a whole) is logged, counted in its report and retried on its next
//! run; it never stops another task, nor the same task for another tenant. The server runs
//! [`Vault::maintain`] on its timer (`--maintenance-interval-ms`); a cluster runs the tasks on
//! its one elected node, which is why they are separate units. Runs never overlap: a run that
//! finds another in progress does nothing.

use super::due::{DISCOVERY_PAGE, DueIndex, Unit};
use super::*;

/// One background task (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Task {
    /// Rotation by age and scheduling past the live limit, every sweep interval.
    KeySweep,
    /// Re-wrapping DEKs off KEK versions being retired (at most `rewrap_per_round` a run).
    Rewrap,
    /// Destroying the keys of deleted tenants whose waiting period is over.
    Shredding,
    /// Named keys' scheduled rotations and destructions.
    KeySchedule,
    /// Expiring and expired notices of secrets' deadlines.
    Expiry,
    /// Removing feed events past the retention period.
    FeedPruning,
    /// Removing dead tokens, ended refresh families, spent secret ids and a shredded tenant's
    /// records under global keys.
    Purge,
}

impl Task {
    /// Every task, in the order a round runs them.
    pub const ALL: [Task; 7] = [
        Task::KeySweep,
        Task::Rewrap,
        Task::Shredding,
        Task::KeySchedule,
        Task::Expiry,
        Task::FeedPruning,
        Task::Purge,
    ];

    /// The task's name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Task::KeySweep => "key sweep",
            Task::Rewrap => "re-wrap",
            Task::Shredding => "shredding",
            Task::KeySchedule => "named-key schedule",
            Task::Expiry => "expiry",
            Task::FeedPruning => "feed pruning",
            Task::Purge => "token purge",
        }
    }
}

/// What one run of one task did: its counts, and how many of its units failed (a unit is the
/// task as a whole, or the task for one tenant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskReport {
    pub task: Task,
    pub done: MaintenanceReport,
    pub failed: u64,
}

/// Counts the failures of a task's units, logging each.
struct Failures {
    task: Task,
    count: u64,
}

impl Failures {
    fn note(&mut self, tenant: Option<TenantId>, result: Result<()>) {
        let Err(error) = result else {
            return;
        };
        self.count += 1;
        let task = self.task.name();
        match tenant {
            Some(tenant) => {
                tracing::warn!(task, %tenant, %error, "maintenance task failed; the others go on")
            }
            None => tracing::warn!(task, %error, "maintenance task failed; the others go on"),
        }
    }
}

/// The maintenance round's own state.
#[derive(Default)]
pub(super) struct MaintenanceState {
    /// Held by the maintenance round in progress.
    running: Mutex<()>,
    /// When each tenant's units of work are next due (due.rs).
    pub(super) due: DueIndex,
}

/// Tenants a round runs one unit for, at most (the rest stay due for the next round).
const TENANTS_PER_ROUND: usize = 1024;

/// How long a unit that failed waits before it is tried again.
const RETRY_NANOS: i64 = 1_000_000_000;

/// How long feed pruning waits when events past the retention period are held back (a webhook
/// has not fanned them out yet).
const HELD_BACK_NANOS: i64 = 10_000_000_000;

impl Vault {
    /// One round: every task once, each whatever happened to the others (see the module
    /// documentation). Does nothing while sealed, or while another run is in progress.
    pub fn maintain(&self) -> Result<MaintenanceReport> {
        let mut total = MaintenanceReport::default();
        for report in self.maintain_tasks()? {
            total.add(&report.done);
            total.failed += report.failed;
        }
        Ok(total)
    }

    /// [`Vault::maintain`], with each task's own report (none when nothing ran).
    pub fn maintain_tasks(&self) -> Result<Vec<TaskReport>> {
        let Ok(_round) = self.maintenance_state.running.try_lock() else {
            return Ok(Vec::new());
        };
        let Some(keyring) = self.maintenance_keyring()? else {
            return Ok(Vec::new());
        };
        Ok(Task::ALL
            .into_iter()
            .map(|task| self.task(&keyring, task))
            .collect())
    }

    /// One run of one task. Does nothing while sealed, or while another run is in progress.
    pub fn run_task(&self, task: Task) -> Result<TaskReport> {
        let idle = TaskReport {
            task,
            done: MaintenanceReport::default(),
            failed: 0,
        };
        let Ok(_run) = self.maintenance_state.running.try_lock() else {
            return Ok(idle);
        };
        match self.maintenance_keyring()? {
            Some(keyring) => Ok(self.task(&keyring, task)),
            None => Ok(idle),
        }
    }

    /// The keyring, or `None` while there is none to work with (sealed, not initialized).
    fn maintenance_keyring(&self) -> Result<Option<Arc<Keyring>>> {
        match self.keyring() {
            Ok(keyring) => Ok(Some(keyring)),
            Err(Error::Sealed | Error::NotInitialized) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn task(&self, keyring: &Keyring, task: Task) -> TaskReport {
        let now = self.now();
        let mut done = MaintenanceReport::default();
        let mut failures = Failures { task, count: 0 };
        if task == Task::KeySweep {
            // The first task of a round: tenants not yet known to the due index become due.
            failures.note(None, self.discover_tenants(keyring, now));
        }
        let due = &self.maintenance_state.due;
        match task {
            Task::KeySweep => {
                for id in due.take_due(Unit::Sweep, now, TENANTS_PER_ROUND) {
                    let result = self.sweep_tenant(keyring, id, now, &mut done);
                    self.retry_if_failed(Unit::Sweep, id, now, &result);
                    failures.note(Some(id), result);
                }
            }
            Task::Rewrap => self.rewrap_due(keyring, now, &mut done, &mut failures),
            Task::Shredding => failures.note(None, self.shred_due(keyring, now, &mut done)),
            Task::KeySchedule => failures.note(None, self.kms_due(keyring, now, 64, &mut done)),
            Task::Expiry => {
                for id in due.take_due(Unit::Expiry, now, TENANTS_PER_ROUND) {
                    let result = self.expiry_tenant(id, now, &mut done);
                    self.retry_if_failed(Unit::Expiry, id, now, &result);
                    failures.note(Some(id), result);
                }
            }
            Task::FeedPruning => {
                for id in due.take_due(Unit::FeedPruning, now, TENANTS_PER_ROUND) {
                    let result = self.prune_tenant(id, now, &mut done);
                    self.retry_if_failed(Unit::FeedPruning, id, now, &result);
                    failures.note(Some(id), result);
                }
            }
            Task::Purge => {
                let purged = self
                    .purge_access(now)
                    .map(|count| done.purged += count as u64);
                failures.note(None, purged);
            }
        }
        TaskReport {
            task,
            done,
            failed: failures.count,
        }
    }

    /// A unit that failed is due again after [`RETRY_NANOS`].
    fn retry_if_failed(&self, unit: Unit, tenant: TenantId, now: i64, result: &Result<()>) {
        if result.is_err() {
            self.maintenance_state
                .due
                .note(unit, tenant, now.saturating_add(RETRY_NANOS));
        }
    }

    /// Work on `tenant` becomes due at `at` at the latest (for the writes that make it due).
    pub(super) fn note_due(&self, unit: Unit, tenant: TenantId, at: i64) {
        self.maintenance_state.due.note(unit, tenant, at);
    }

    /// Reads the next page of tenant records the due index has not seen since `keyring` was
    /// opened (if any), and makes every unit of each due now (due.rs).
    fn discover_tenants(&self, keyring: &Keyring, now: i64) -> Result<()> {
        let due = &self.maintenance_state.due;
        let Some((epoch, from)) = due.discovery(keyring.serial) else {
            return Ok(());
        };
        let prefix = schema::TENANT_PREFIX;
        let page = self
            .data
            .scan(Space::Config, prefix, &from, DISCOVERY_PAGE)?;
        let mut first_error = None;
        let mut tenants = Vec::with_capacity(page.len());
        for (_, value) in &page {
            let id = from_json::<TenantRecord>(value, "a tenant record").and_then(|record| {
                TenantId::parse_hex(&record.id).ok_or_else(|| corrupt("a tenant record"))
            });
            match id {
                Ok(id) => tenants.push(id),
                // One bad record does not stop the others from being discovered.
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        let next = match page.last() {
            Some((last, _)) if page.len() == DISCOVERY_PAGE => {
                let mut next = last.clone();
                next.push(0);
                Some(next)
            }
            _ => None,
        };
        due.discovered(epoch, &tenants, now, next);
        first_error.map_or(Ok(()), Err)
    }

    /// Expiry notices of one tenant; its unit is due again at its earliest alarm.
    fn expiry_tenant(&self, id: TenantId, now: i64, done: &mut MaintenanceReport) -> Result<()> {
        if self.tenant_state(id)?.is_none() {
            return Ok(());
        }
        done.expiry_events += self.expire_due(id, now)? as u64;
        if let Some(at) = self.first_alarm(id)? {
            self.note_due(Unit::Expiry, id, at);
        }
        Ok(())
    }

    /// Feed pruning of one tenant; its unit is due again when its oldest event passes the
    /// retention period (or soon, if events past it are held back for a webhook).
    fn prune_tenant(&self, id: TenantId, now: i64, done: &mut MaintenanceReport) -> Result<()> {
        let retention = self.config.feed.retention_nanos;
        if retention <= 0 || self.tenant_state(id)?.is_none() {
            return Ok(());
        }
        let limit = 1024;
        let removed = self.prune_feed(id, now, limit)?;
        done.events_pruned += removed as u64;
        if let Some(oldest) = self.oldest_event_time(id)? {
            let at = oldest.saturating_add(retention);
            let at = if at > now || removed >= limit {
                at
            } else {
                // Nothing more could go: held back for a webhook. Not every round.
                now.saturating_add(HELD_BACK_NANOS)
            };
            self.note_due(Unit::FeedPruning, id, at);
        }
        Ok(())
    }

    /// The re-wrap jobs of the tenants that have one, within one run's budget of DEKs.
    fn rewrap_due(
        &self,
        keyring: &Keyring,
        now: i64,
        done: &mut MaintenanceReport,
        failures: &mut Failures,
    ) {
        let mut budget = self.config.keys.rewrap_per_round.max(1);
        for id in self
            .maintenance_state
            .due
            .take_due(Unit::Rewrap, now, usize::MAX)
        {
            if budget == 0 {
                self.note_due(Unit::Rewrap, id, now);
                continue;
            }
            let result = self.tenant_state(id).and_then(|state| match state {
                // A deleted tenant: its keys wait for shredding (or a restore).
                None => Ok(None),
                Some(_) => {
                    // A page of versions at a time (bounded memory), until the job is done or
                    // the round's budget is spent.
                    let mut used = 0;
                    loop {
                        let page = (budget - used).min(super::keys::REWRAP_CHUNK);
                        let read = self.rewrap_round(keyring, id, page, done)?;
                        used += read;
                        if read < page || used >= budget {
                            break;
                        }
                    }
                    Ok(Some((used, self.rewrap_pending(id)?)))
                }
            });
            match result {
                Ok(Some((used, more))) => {
                    budget = budget.saturating_sub(used);
                    if more {
                        self.note_due(Unit::Rewrap, id, now);
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    self.note_due(Unit::Rewrap, id, now.saturating_add(RETRY_NANOS));
                    failures.note(Some(id), Err(error));
                }
            }
        }
    }
}

impl MaintenanceReport {
    /// Adds another report's counts to this one.
    pub fn add(&mut self, other: &MaintenanceReport) {
        self.rotated += other.rotated;
        self.rewrapped += other.rewrapped;
        self.retired += other.retired;
        self.shredded += other.shredded;
        self.keys_rotated += other.keys_rotated;
        self.keys_destroyed += other.keys_destroyed;
        self.expiry_events += other.expiry_events;
        self.events_pruned += other.events_pruned;
        self.purged += other.purged;
        self.failed += other.failed;
    }
}
