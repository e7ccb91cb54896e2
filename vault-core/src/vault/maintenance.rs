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

use super::*;
use crate::schema::KEK_STATE_PREFIX;

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
    last_sweep: Mutex<Option<i64>>,
}

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
        match task {
            Task::KeySweep => {
                let due = {
                    let mut last = lock(&self.maintenance_state.last_sweep);
                    let due =
                        last.is_none_or(|at| now - at >= self.config.keys.sweep_interval_nanos);
                    if due {
                        *last = Some(now);
                    }
                    due
                };
                if due {
                    failures.note(None, self.sweep(keyring, now, &mut done));
                }
            }
            Task::Rewrap => self.rewrap_all(keyring, &mut done, &mut failures),
            Task::Shredding => failures.note(None, self.shred_due(keyring, now, &mut done)),
            Task::KeySchedule => failures.note(None, self.kms_due(keyring, now, 64, &mut done)),
            Task::Expiry | Task::FeedPruning => match self.tenant_records() {
                Ok(records) => {
                    for record in records {
                        let Some(id) = TenantId::parse_hex(&record.id) else {
                            failures.note(None, Err(corrupt("a tenant record")));
                            continue;
                        };
                        let result = if task == Task::Expiry {
                            self.expire_due(id, now)
                                .map(|count| done.expiry_events += count as u64)
                        } else {
                            self.prune_feed(id, now, 1024)
                                .map(|count| done.events_pruned += count as u64)
                        };
                        failures.note(Some(id), result);
                    }
                }
                Err(error) => failures.note(None, Err(error)),
            },
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

    /// The re-wrap jobs of every tenant that has one, within one run's budget of DEKs.
    fn rewrap_all(&self, keyring: &Keyring, done: &mut MaintenanceReport, failures: &mut Failures) {
        let mut budget = self.config.keys.rewrap_per_round.max(1);
        let prefix = KEK_STATE_PREFIX;
        let states = match self.keys.scan(Space::Config, prefix, prefix, usize::MAX) {
            Ok(states) => states,
            Err(error) => return failures.note(None, Err(error.into())),
        };
        for (key, _) in states {
            if budget == 0 {
                break;
            }
            let Some(id) = std::str::from_utf8(&key[prefix.len()..])
                .ok()
                .and_then(TenantId::parse_hex)
            else {
                failures.note(None, Err(corrupt("a key lifecycle key")));
                continue;
            };
            let result = self.tenant_state(id).and_then(|state| match state {
                // A deleted tenant: its keys wait for shredding (or a restore).
                None => Ok(0),
                Some(_) => self.rewrap_round(keyring, id, budget, done),
            });
            match result {
                Ok(used) => budget -= used,
                Err(error) => failures.note(Some(id), Err(error)),
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
