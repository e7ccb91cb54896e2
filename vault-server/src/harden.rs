//! What the server does to its own process before it holds any key: no core dumps, and with
//! `--mlock` no swapping.
//!
//! A core dump or a swapped-out page would put unsealed keys, tokens and secret values on a disk
//! the vault does not manage. [`harden`] runs first thing in `main`, before the async runtime
//! starts its threads:
//!
//! - the core-file limit is set to 0 (soft and hard, so nothing in the process raises it back);
//! - the process is marked not dumpable (`PR_SET_DUMPABLE` 0): no core dump even where a core
//!   pattern pipes to a helper that ignores the limit, and no `ptrace` attach or
//!   `/proc/PID/mem` read by another process of the same user without `CAP_SYS_PTRACE`;
//! - with `--mlock`, every page mapped now and later is locked in memory (`mlockall`). A failure
//!   refuses the start: an operator who asked for it must not get a server that swaps.
//!
//! [`Hardening::read`] reads the state back from the kernel; the metrics endpoint reports that
//! reading, not what was asked for.

/// The process state [`harden`] sets, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hardening {
    /// `PR_GET_DUMPABLE` says 0.
    pub not_dumpable: bool,
    /// The hard core-file limit is 0.
    pub no_core_files: bool,
    /// Bytes of memory locked (`VmLck` in /proc/self/status); 0 without `--mlock`.
    pub locked_bytes: u64,
}

/// Disables core dumps and, with `mlock`, locks every present and future page in memory.
pub fn harden(mlock: bool) -> Result<(), String> {
    imp::no_core_dumps()?;
    if mlock {
        imp::lock_memory()?;
    }
    Ok(())
}

impl Hardening {
    /// Reads the process's dumpable flag, core limit and locked memory from the kernel.
    pub fn read() -> Hardening {
        imp::read()
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use super::Hardening;
    use rustix::{
        mm::{MlockAllFlags, mlockall},
        process::{DumpableBehavior, Resource, Rlimit, dumpable_behavior, getrlimit, setrlimit},
    };

    pub(super) fn no_core_dumps() -> Result<(), String> {
        let zero = Rlimit {
            current: Some(0),
            maximum: Some(0),
        };
        setrlimit(Resource::Core, zero)
            .map_err(|e| format!("cannot set the core-file limit to 0 (setrlimit: {e})"))?;
        rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable).map_err(|e| {
            format!("cannot mark the process not dumpable (prctl PR_SET_DUMPABLE: {e})")
        })
    }

    pub(super) fn lock_memory() -> Result<(), String> {
        // ONFAULT: pages are locked as they are touched, so thread stacks and reservations
        // cost only what they use.
        mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT).map_err(
            |e| {
                format!(
                    "--mlock: cannot lock the server's memory (mlockall: {e}). Give the service \
                 CAP_IPC_LOCK (systemd: AmbientCapabilities=CAP_IPC_LOCK) or raise its \
                 locked-memory limit (LimitMEMLOCK=infinity, ulimit -l), or start without --mlock"
                )
            },
        )
    }

    pub(super) fn read() -> Hardening {
        let not_dumpable = matches!(dumpable_behavior(), Ok(DumpableBehavior::NotDumpable));
        let no_core_files = getrlimit(Resource::Core).maximum == Some(0);
        Hardening {
            not_dumpable,
            no_core_files,
            locked_bytes: locked_bytes().unwrap_or(0),
        }
    }

    /// `VmLck` of /proc/self/status, in bytes.
    fn locked_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmLck:"))?;
        let kib: u64 = line
            .trim_start_matches("VmLck:")
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib.saturating_mul(1024))
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::Hardening;

    pub(super) fn no_core_dumps() -> Result<(), String> {
        // Linux only for now; elsewhere the server starts with the system's core settings.
        Ok(())
    }

    pub(super) fn lock_memory() -> Result<(), String> {
        Err("--mlock is implemented for Linux only".into())
    }

    pub(super) fn read() -> Hardening {
        Hardening {
            not_dumpable: false,
            no_core_files: false,
            locked_bytes: 0,
        }
    }
}
