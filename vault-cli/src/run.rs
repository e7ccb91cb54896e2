//! `vault-cli run`: start a command with secrets in its environment, and only there.
//!
//! The values go into the child's environment block when it is started. They are never written
//! to disk, never put on a command line, never set in vault-cli's own environment, and the
//! child does not get VAULT_TOKEN: it gets the secrets it asked for, not the means to read
//! others. vault-cli stays the parent: it forwards the usual termination and user signals to
//! the child and exits with the child's exit code (128 + N when a signal N ended it, as shells
//! report it). With `--watch`, a change to one of the secrets restarts the child with the new
//! values: the restart signal, up to the grace period for it to exit, then SIGKILL.

use std::{
    collections::BTreeSet,
    ffi::{OsStr, OsString},
    os::unix::{ffi::OsStrExt, process::ExitStatusExt},
    path::PathBuf,
    process::ExitStatus,
    time::Duration,
};

use rustix::process::{Pid, Signal, kill_process};
use tokio::{
    process::{Child, Command},
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use vault_client::SecretValue;

use crate::{
    client::{CliError, CliResult, Ctx},
    input::parse_duration,
    sources::{self, Changes, FieldRef},
};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Tenant that owns the secrets.
    #[arg(long, env = "VAULT_TENANT")]
    pub tenant: String,
    /// A variable for the command: NAME=PATH#FIELD, e.g. DB_PASSWORD=db/primary#password
    /// (repeat for several).
    #[arg(long = "env", value_name = "NAME=PATH#FIELD")]
    pub env: Vec<String>,
    /// A file of NAME=PATH#FIELD lines (blank lines and lines starting with '#' are skipped).
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Restart the command with the new values when one of its secrets changes.
    #[arg(long)]
    pub watch: bool,
    /// The signal that asks the command to stop before a restart.
    #[arg(long, default_value = "TERM", value_parser = parse_signal)]
    pub restart_signal: NamedSignal,
    /// How long the command has to exit after the restart signal before it is killed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub grace: Duration,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// A signal by name (TERM, INT, HUP, QUIT, USR1, USR2).
#[derive(Clone, Copy, Debug)]
pub struct NamedSignal(i32);

const SIGNALS: [(&str, SignalKind); 6] = [
    ("TERM", SignalKind::terminate()),
    ("INT", SignalKind::interrupt()),
    ("HUP", SignalKind::hangup()),
    ("QUIT", SignalKind::quit()),
    ("USR1", SignalKind::user_defined1()),
    ("USR2", SignalKind::user_defined2()),
];

fn parse_signal(text: &str) -> Result<NamedSignal, String> {
    let name = text.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    SIGNALS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, kind)| NamedSignal(kind.as_raw_value()))
        .ok_or_else(|| format!("{text:?} is not one of TERM, INT, HUP, QUIT, USR1, USR2"))
}

/// One variable: its name and the field it comes from.
struct Mapping {
    name: String,
    source: FieldRef,
}

fn parse_mapping(text: &str, origin: String) -> CliResult<Mapping> {
    let usage = || {
        CliError::with_hint(
            format!("{origin}: {text:?} is not NAME=PATH#FIELD"),
            "e.g. --env DB_PASSWORD=db/primary#password",
        )
    };
    let (name, reference) = text.trim().split_once('=').ok_or_else(usage)?;
    let (path, field) = reference.rsplit_once('#').ok_or_else(usage)?;
    let valid_name = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(CliError::new(format!(
            "{origin}: {name:?} is not a variable name (letters, digits and '_', not starting \
             with a digit)"
        )));
    }
    if path.is_empty() || field.is_empty() {
        return Err(usage());
    }
    Ok(Mapping {
        name: name.to_owned(),
        source: FieldRef {
            path: path.to_owned(),
            field: field.to_owned(),
            origin,
        },
    })
}

fn mappings(args: &RunArgs) -> CliResult<Vec<Mapping>> {
    let mut mappings = Vec::new();
    if let Some(file) = &args.env_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| CliError::new(format!("--env-file {}: {e}", file.display())))?;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            mappings.push(parse_mapping(
                line,
                format!("{}:{}", file.display(), number + 1),
            )?);
        }
    }
    for text in &args.env {
        mappings.push(parse_mapping(text, "--env".to_owned())?);
    }
    if mappings.is_empty() {
        return Err(CliError::with_hint(
            "no secrets to inject",
            "give --env NAME=PATH#FIELD or --env-file FILE",
        ));
    }
    let mut seen = BTreeSet::new();
    for mapping in &mappings {
        if !seen.insert(&mapping.name) {
            return Err(CliError::new(format!(
                "{}: {} is given twice",
                mapping.source.origin, mapping.name
            )));
        }
    }
    Ok(mappings)
}

/// Starts the command with the values in its environment (and nowhere else).
fn start(args: &RunArgs, mappings: &[Mapping], values: &[SecretValue]) -> CliResult<Child> {
    let (program, arguments) = args
        .command
        .split_first()
        .ok_or_else(|| CliError::new("no command given after --"))?;
    let mut command = Command::new(program);
    command.args(arguments).env_remove("VAULT_TOKEN");
    for (mapping, value) in mappings.iter().zip(values) {
        if value.expose().contains(&0) {
            return Err(CliError::new(format!(
                "{}: {}#{} contains a NUL byte, which an environment variable cannot hold",
                mapping.name, mapping.source.path, mapping.source.field
            )));
        }
        command.env(&mapping.name, OsStr::from_bytes(value.expose()));
    }
    command
        .spawn()
        .map_err(|e| CliError::new(format!("cannot start {}: {e}", program.to_string_lossy())))
}

fn send(child: &Child, signal: i32) {
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw);
    if let (Some(pid), Some(signal)) = (pid, Signal::from_named_raw(signal)) {
        // The child may have exited already; then there is nobody to tell.
        let _ = kill_process(pid, signal);
    }
}

/// Whether vault-cli's process group is the foreground group of the terminal on stdin: then a
/// Ctrl-C or Ctrl-\ from the terminal reaches the child directly (same group), and forwarding
/// it as well would deliver it twice (many programs take a second SIGINT as "force quit").
fn terminal_signals_reach_the_child() -> bool {
    rustix::termios::tcgetpgrp(std::io::stdin())
        .is_ok_and(|foreground| foreground == rustix::process::getpgrp())
}

/// Ends the command rather than asking something of it.
fn terminates(signal: i32) -> bool {
    [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
        SignalKind::quit(),
    ]
    .iter()
    .any(|kind| kind.as_raw_value() == signal)
}

/// Forwards the signals vault-cli receives; from now on they no longer end vault-cli itself.
fn forward_signals() -> CliResult<mpsc::Receiver<i32>> {
    let (sender, receiver) = mpsc::channel(8);
    let from_terminal = terminal_signals_reach_the_child();
    for (name, kind) in SIGNALS {
        // Still caught (so vault-cli waits for the child's exit code), but not sent again.
        let forward = !(from_terminal && matches!(name, "INT" | "QUIT"));
        let mut stream =
            signal(kind).map_err(|e| CliError::new(format!("cannot handle signals: {e}")))?;
        let sender = sender.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if forward && sender.send(kind.as_raw_value()).await.is_err() {
                    return;
                }
            }
        });
    }
    Ok(receiver)
}

/// The child's exit code as vault-cli's: its own, or 128 + the signal that ended it.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => u8::try_from((128 + signal) & 0xff).unwrap_or(1),
        (None, None) => 1,
    }
}

/// Asks the child to stop, waits the grace period, then kills it; returns how it ended.
async fn stop(child: &mut Child, signal: NamedSignal, grace: Duration) -> CliResult<ExitStatus> {
    send(child, signal.0);
    if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
        return status.map_err(|e| CliError::new(format!("waiting for the command: {e}")));
    }
    eprintln!(
        "vault-cli: the command did not exit within {} s of the restart signal; killing it",
        grace.as_secs_f64()
    );
    child
        .kill()
        .await
        .map_err(|e| CliError::new(format!("cannot kill the command: {e}")))?;
    child
        .wait()
        .await
        .map_err(|e| CliError::new(format!("waiting for the command: {e}")))
}

/// Forwards the signals that arrived meanwhile; true if one of them ends the command.
fn forward_pending(child: &Child, signals: &mut mpsc::Receiver<i32>) -> bool {
    let mut ending = false;
    while let Ok(signal) = signals.try_recv() {
        send(child, signal);
        ending |= terminates(signal);
    }
    ending
}

/// Runs the command; returns the exit code vault-cli should exit with.
pub async fn run(ctx: &Ctx, args: RunArgs) -> CliResult<u8> {
    let mappings = mappings(&args)?;
    let sources: Vec<FieldRef> = mappings
        .iter()
        .map(|m| FieldRef {
            path: m.source.path.clone(),
            field: m.source.field.clone(),
            origin: format!("{} ({})", m.name, m.source.origin),
        })
        .collect();
    let client = sources::client(ctx, args.watch).await?;
    let mut changes = if args.watch {
        let paths = sources.iter().map(|s| s.path.clone()).collect();
        Some(Changes::open(&client, &args.tenant, paths).await?)
    } else {
        None
    };
    let mut values = sources::resolve(&client, &args.tenant, &sources).await?;
    let mut signals = forward_signals()?;
    let mut child = start(&args, &mappings, &values)?;
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status
                    .map_err(|e| CliError::new(format!("waiting for the command: {e}")))?;
                return Ok(exit_code(status));
            }
            Some(signal) = signals.recv() => send(&child, signal),
            changed = next_change(&mut changes) => {
                if let Err(error) = changed {
                    eprintln!(
                        "vault-cli: warning: no longer watching the secrets ({}); the command \
                         keeps running with the values it has",
                        error.message
                    );
                    changes = None;
                    continue;
                }
                let fresh = match sources::resolve(&client, &args.tenant, &sources).await {
                    Ok(fresh) => fresh,
                    Err(error) => {
                        eprintln!(
                            "vault-cli: warning: {}; the command keeps running with the values \
                             it has",
                            error.message
                        );
                        continue;
                    }
                };
                if sources::same(&values, &fresh) {
                    continue;
                }
                // Asked to stop while reading, or exited meanwhile: no restart.
                if forward_pending(&child, &mut signals) {
                    continue;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    return Ok(exit_code(status));
                }
                values = fresh;
                eprintln!("vault-cli: a secret changed; restarting the command");
                let status = stop(&mut child, args.restart_signal, args.grace).await?;
                // A stop asked for during the restart is honoured rather than restarted over.
                let mut stopping = false;
                while let Ok(signal) = signals.try_recv() {
                    stopping |= terminates(signal);
                }
                if stopping {
                    return Ok(exit_code(status));
                }
                child = start(&args, &mappings, &values)?;
            }
        }
    }
}

/// The next change, or never when not watching.
async fn next_change(changes: &mut Option<Changes>) -> CliResult<()> {
    match changes {
        Some(changes) => changes.next().await,
        None => std::future::pending().await,
    }
}
