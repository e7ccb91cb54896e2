//! No-wait attempts: a call run on an async worker thread must not wait on anything slow
//! (a disk read, a network round trip, a lock held across either). Inside [`Attempt::now`] the
//! backends serve only what they hold in memory and answer [`StorageError::would_wait`] for
//! anything else (a RocksDB read that is not in its memory tables or block cache, every etcd
//! request, every write); the caller then runs the same call again with [`Attempt::run`] on
//! a thread that may wait. The attempt also carries what the first run already did that must
//! not be done twice (a tenant's rate-limit token taken).

use std::cell::Cell;

/// What a run of a call has done so far, carried from the no-wait run to the one that may wait.
#[derive(Clone, Copy, Debug, Default)]
pub struct Attempt {
    /// The caller's tenant admitted the call (its rate-limit token is taken).
    admitted: bool,
}

#[derive(Clone, Copy, Default)]
struct Mode {
    active: bool,
    no_wait: bool,
    admitted: bool,
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode { active: false, no_wait: false, admitted: false }) };
}

/// Restores the thread's mode when a run ends, also by unwinding.
struct Restore(Mode);

impl Drop for Restore {
    fn drop(&mut self) {
        MODE.with(|mode| mode.set(self.0));
    }
}

impl Attempt {
    pub fn new() -> Attempt {
        Attempt::default()
    }

    /// Runs `work` on this thread, refusing to wait (see the module documentation).
    pub fn now<R>(&mut self, work: impl FnOnce() -> R) -> R {
        self.enter(true, work)
    }

    /// Runs `work` on this thread, waiting as needed, after whatever ran before in this attempt.
    pub fn run<R>(&mut self, work: impl FnOnce() -> R) -> R {
        self.enter(false, work)
    }

    fn enter<R>(&mut self, no_wait: bool, work: impl FnOnce() -> R) -> R {
        let before = MODE.with(|mode| {
            mode.replace(Mode {
                active: true,
                no_wait,
                admitted: self.admitted,
            })
        });
        let restore = Restore(before);
        let result = work();
        self.admitted = MODE.with(Cell::get).admitted;
        drop(restore);
        result
    }
}

/// Whether this thread is in a no-wait run: anything that would wait must refuse with
/// [`StorageError::would_wait`] (or the caller's own error for it) instead.
pub fn active() -> bool {
    MODE.with(|mode| mode.get().no_wait)
}

/// `Err(would_wait)` in a no-wait run: for whatever must not happen on an async worker.
pub fn refuse() -> Result<(), crate::StorageError> {
    if active() {
        Err(crate::StorageError::would_wait())
    } else {
        Ok(())
    }
}

/// Whether the call's tenant admission has happened already in this attempt (the rate-limit
/// token is taken once per call, whichever run takes it).
pub fn admitted() -> bool {
    MODE.with(|mode| mode.get().admitted)
}

/// Notes that the call's tenant admitted it (no-op outside an attempt).
pub fn note_admitted() {
    MODE.with(|mode| {
        let mut current = mode.get();
        if current.active {
            current.admitted = true;
            mode.set(current);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_holds_inside_a_run_only_and_admission_carries_to_the_next() {
        assert!(!active());
        let mut attempt = Attempt::new();
        attempt.now(|| {
            assert!(active());
            assert!(!admitted());
            note_admitted();
        });
        assert!(!active());
        attempt.run(|| {
            assert!(!active());
            assert!(
                admitted(),
                "the second run knows the first admitted the call"
            );
        });
        note_admitted();
        assert!(!admitted(), "outside an attempt nothing is noted");
    }
}
