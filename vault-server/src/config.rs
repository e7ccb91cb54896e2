//! `--config FILE`: every flag as a TOML key, and the reference of them all.
//!
//! A key is a flag's long name with `_` for `-` (`--metrics-listen` is `metrics_listen`); a
//! repeatable flag takes an array, a switch a boolean. Precedence, highest first: the command
//! line, the `VAULT_*` variables, the file, the built-in defaults. The file's values become the
//! flags' defaults (clap applies the command line and the environment over them), after each was
//! checked by parsing it as the command line would: an unknown key, a value of the wrong type
//! or one the flag refuses stops the start with the file, the line and the key.
//!
//! [`reference`] writes the reference of every key from the flags themselves (`vault-server
//! --config-reference`); `vault-server/CONFIG.md` is its output, and a test keeps the two equal.
//!
//! SIGHUP re-reads the file, the environment and the command line the same way ([`load`]);
//! what can change at run time is applied (`lib.rs`, `reload`), the rest is named as needing a
//! restart.

use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsString,
    path::{Path, PathBuf},
};

use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

use crate::Args;

/// Keys that are not flags of the server's settings (a restore is a one-time act of one
/// start, never a setting: in a file it would refuse every later start).
const NOT_KEYS: [&str; 7] = [
    "config",
    "config-reference",
    "help",
    "version",
    "restore-from",
    "restore-keys",
    "restore-public-key",
];

/// What one start (or reload) was made from.
pub struct Loaded {
    pub args: Args,
    /// Every setting's raw values as resolved (flag, variable, file or default), by key.
    pub values: BTreeMap<String, Vec<OsString>>,
    /// The file read, if any.
    pub file: Option<PathBuf>,
}

/// The file `--config` or `VAULT_CONFIG` names (the command line first).
fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let mut words = argv.iter().skip(1);
    while let Some(word) = words.next() {
        let text = word.to_string_lossy();
        if text == "--" {
            break;
        }
        if text == "--config" {
            return words.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("VAULT_CONFIG").map(PathBuf::from)
}

/// The file key of a flag.
fn key_of(arg: &Arg) -> Option<String> {
    let long = arg.get_long()?;
    (!NOT_KEYS.contains(&long)).then(|| long.replace('-', "_"))
}

/// Whether a flag takes several values (repeated, or separated by commas).
fn takes_many(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append) || arg.get_value_delimiter().is_some()
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// A value of the file as the command-line words it stands for.
fn words(value: &toml::Value) -> Result<Vec<String>, &'static str> {
    match value {
        toml::Value::String(text) => Ok(vec![text.clone()]),
        toml::Value::Integer(number) => Ok(vec![number.to_string()]),
        toml::Value::Float(number) => Ok(vec![number.to_string()]),
        toml::Value::Boolean(flag) => Ok(vec![flag.to_string()]),
        toml::Value::Array(items) => {
            let mut all = Vec::new();
            for item in items {
                if matches!(item, toml::Value::Array(_) | toml::Value::Table(_)) {
                    return Err("an array of strings, numbers or booleans");
                }
                all.extend(words(item)?);
            }
            Ok(all)
        }
        toml::Value::Table(_) => Err("a string, number, boolean or array (not a table)"),
        toml::Value::Datetime(_) => Err("a string, number, boolean or array (not a date)"),
    }
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(here + 1);
            previous = here;
        }
    }
    row[b.len()]
}

/// Checks one key's value by parsing it as the command line would, alone.
fn check(arg: &Arg, key: &str, value: &toml::Value) -> Result<Vec<String>, String> {
    let switch = matches!(arg.get_action(), ArgAction::SetTrue);
    if switch && !matches!(value, toml::Value::Boolean(_)) {
        return Err(format!("`{key}` is a switch: give true or false"));
    }
    let words = words(value).map_err(|wanted| format!("`{key}` takes {wanted}"))?;
    if words.len() != 1 && !takes_many(arg) {
        return Err(format!("`{key}` takes one value, not an array"));
    }
    if switch {
        return Ok(words);
    }
    let long = arg.get_long().unwrap_or_default().to_owned();
    // The flag alone, without what ties it to others (its variable, what it requires).
    let mut alone = Arg::new(arg.get_id().clone())
        .long(long.clone())
        .value_parser(arg.get_value_parser().clone())
        .action(ArgAction::Append);
    if let Some(names) = arg.get_value_names() {
        alone = alone.value_names(names.to_vec());
    }
    if let Some(delimiter) = arg.get_value_delimiter() {
        alone = alone.value_delimiter(delimiter);
    }
    let mut line = vec![OsString::from("check")];
    for word in &words {
        // One word: a value that starts with `-` is a value, not a flag.
        line.push(OsString::from(format!("--{long}={word}")));
    }
    Command::new("check")
        .arg(alone)
        .try_get_matches_from(line)
        .map_err(|e| {
            let text = e.to_string();
            let first = text
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_owned();
            format!("bad value for `{key}`: {first}")
        })?;
    Ok(words)
}

/// The command with the file's values as its defaults.
fn with_file(mut command: Command, path: &Path) -> Result<Command, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--config {}: cannot read it: {e}", path.display()))?;
    let entries: BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>> =
        toml::from_str(&text).map_err(|e| {
            let line = e.span().map_or(0, |span| line_of(&text, span.start));
            format!(
                "--config {} line {line}: not valid TOML: {}",
                path.display(),
                e.message()
            )
        })?;
    let args: HashMap<String, Arg> = command
        .get_arguments()
        .filter_map(|arg| key_of(arg).map(|key| (key, arg.clone())))
        .collect();
    for (key, value) in entries {
        let line = line_of(&text, key.span().start);
        let at = |message: String| format!("--config {} line {line}: {message}", path.display());
        let name = key.get_ref();
        let Some(arg) = args.get(name) else {
            let near = args
                .keys()
                .map(|known| (distance(known, name), known))
                .filter(|(d, _)| *d <= 3)
                .min();
            return Err(at(match near {
                Some((_, known)) => format!("unknown key `{name}` (did you mean `{known}`?)"),
                None => format!(
                    "unknown key `{name}` (see vault-server --config-reference for every key)"
                ),
            }));
        };
        let words = check(arg, name, value.get_ref()).map_err(at)?;
        let id = arg.get_id().clone();
        command = command.mut_arg(id, |arg| {
            if words.len() == 1 && !takes_many(&arg) {
                arg.default_value(words[0].clone())
            } else {
                arg.default_values(words.clone())
            }
        });
    }
    Ok(command)
}

/// Checks what clap cannot see in defaults: flags that only work in pairs.
fn check_pairs(args: &Args) -> Result<(), String> {
    if args.tls_cert.is_some() != args.tls_key.is_some() {
        return Err("tls_cert and tls_key go together: give both or neither".into());
    }
    if args.tls_client_ca.is_some() && args.tls_cert.is_none() {
        return Err("tls_client_ca needs tls_cert and tls_key".into());
    }
    if args.etcd_client_cert.is_some() != args.etcd_client_key.is_some() {
        return Err(
            "etcd_client_cert and etcd_client_key go together: give both or neither".into(),
        );
    }
    Ok(())
}

/// Parses the command line `argv` over the environment and the config file. `Err`: a message
/// for the operator (clap's own errors keep their kind, so `--help` and `--version` print and
/// exit as usual in `main`).
pub fn load(argv: Vec<OsString>) -> Result<Loaded, LoadError> {
    let file = config_path(&argv);
    let mut command = Args::command();
    if let Some(path) = &file {
        command = with_file(command, path).map_err(LoadError::Config)?;
    }
    let matches = command
        .try_get_matches_from(argv)
        .map_err(LoadError::Clap)?;
    let values = raw_values(&matches);
    let args = Args::from_arg_matches(&matches).map_err(LoadError::Clap)?;
    check_pairs(&args).map_err(LoadError::Config)?;
    Ok(Loaded { args, values, file })
}

/// Why [`load`] failed.
pub enum LoadError {
    /// The command line (or `--help`, `--version`): clap prints it.
    Clap(clap::Error),
    /// The config file, or a pair of settings.
    Config(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Clap(e) => write!(f, "{e}"),
            LoadError::Config(e) => f.write_str(e),
        }
    }
}

fn raw_values(matches: &ArgMatches) -> BTreeMap<String, Vec<OsString>> {
    let mut values = BTreeMap::new();
    for id in matches.ids() {
        let raw = matches
            .get_raw(id.as_str())
            .map(|raw| raw.map(OsString::from).collect())
            .unwrap_or_default();
        values.insert(id.as_str().to_owned(), raw);
    }
    values
}

/// The keys whose values differ between two loads.
pub fn changed(
    before: &BTreeMap<String, Vec<OsString>>,
    after: &BTreeMap<String, Vec<OsString>>,
) -> Vec<String> {
    let mut keys: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|key| before.get(*key) != after.get(*key))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The reference of every key, from the flags themselves (Markdown).
pub fn reference() -> String {
    let command = Args::command();
    let mut out = String::from(
        "# vault-server configuration reference\n\n\
         Generated by `vault-server --config-reference` from the server's flags; \
         `tests/it/operations.rs` checks that this file is its output.\n\n\
         `vault-server --config FILE` (or `VAULT_CONFIG=FILE`) reads a TOML file of these \
         keys. Each key is a flag's long name with `_` for `-`. The command line overrides \
         the environment variables, which override the file, which overrides the defaults. \
         An unknown key or a bad value stops the start, naming the file, the line and the key. \
         SIGHUP re-reads everything: the keys marked *reloads* take effect at once (TLS \
         certificate and key files are re-read too); a change to any other key is logged \
         and audited as needing a restart.\n\n\
         | key | flag | variable | default | reloads | what |\n|---|---|---|---|---|---|\n",
    );
    for arg in command.get_arguments() {
        let Some(key) = key_of(arg) else { continue };
        let long = arg.get_long().unwrap_or_default();
        let variable = arg
            .get_env()
            .map(|v| format!("`{}`", v.to_string_lossy()))
            .unwrap_or_default();
        let default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let kind = if matches!(arg.get_action(), ArgAction::SetTrue) {
            "false (switch)".to_owned()
        } else if takes_many(arg) {
            format!("[{}] (array)", default.join(", "))
        } else {
            default.join(", ")
        };
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(|h| h.to_string().replace('\n', " ").replace('|', "\\|"))
            .unwrap_or_default();
        let reloads = if crate::RELOADABLE.contains(&arg.get_id().as_str()) {
            "reloads"
        } else {
            ""
        };
        out.push_str(&format!(
            "| `{key}` | `--{long}` | {variable} | {kind} | {reloads} | {help} |\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with(text: &str, flags: &[&str]) -> Result<Loaded, String> {
        let dir = tempfile_dir();
        let path = dir.join("vault.toml");
        std::fs::write(&path, text).expect("write");
        let mut argv: Vec<OsString> = vec!["vault-server".into(), "--config".into()];
        argv.push(path.into_os_string());
        argv.extend(flags.iter().map(OsString::from));
        let loaded = load(argv).map_err(|e| e.to_string());
        let _ = std::fs::remove_dir_all(&dir);
        loaded
    }

    fn tempfile_dir() -> PathBuf {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("random");
        let dir = std::env::temp_dir().join(format!("vault-config-{}", hex::encode(bytes)));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn the_file_sets_flags_and_the_command_line_wins() {
        let loaded = load_with(
            "data_dir = \"/tmp/v\"\nsource_rate_limit = 50\nmlock = true\n\
             trusted_proxy = [\"10.0.0.0/8\", \"192.168.0.0/16\"]\n\
             etcd_endpoints = [\"http://a:2379\", \"http://b:2379\"]\n",
            &["--source-rate-limit", "70"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.args.data_dir, Some(PathBuf::from("/tmp/v")));
        assert_eq!(loaded.args.source_rate_limit, 70);
        assert!(loaded.args.mlock);
        assert_eq!(loaded.args.trusted_proxies.len(), 2);
        assert_eq!(loaded.args.etcd_endpoints.len(), 2);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_line_and_the_key() {
        let cases = [
            (
                "data_dir = \"/x\"\nmetric_listen = \"127.0.0.1:1\"\n",
                "line 2: unknown key `metric_listen` (did you mean `metrics_listen`?)",
            ),
            (
                "\n\nlisten = \"not an address\"\n",
                "line 3: bad value for `listen`",
            ),
            (
                "source_rate_limit = \"many\"\n",
                "line 1: bad value for `source_rate_limit`",
            ),
            ("mlock = \"yes\"\n", "line 1: `mlock` is a switch"),
            (
                "listen = [\"a\", \"b\"]\n",
                "line 1: `listen` takes one value",
            ),
            ("[limits]\nx = 1\n", "line 1: unknown key `limits`"),
            ("listen = \n", "line 1: not valid TOML"),
            (
                "tls_cert = \"/c.pem\"\n",
                "tls_cert and tls_key go together",
            ),
            ("config = \"/other.toml\"\n", "line 1: unknown key `config`"),
        ];
        for (text, expected) in cases {
            let error = match load_with(text, &[]) {
                Ok(_) => panic!("{text:?} was accepted"),
                Err(e) => e,
            };
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn every_flag_has_a_key_in_the_reference() {
        let reference = reference();
        for arg in Args::command().get_arguments() {
            let Some(key) = key_of(arg) else { continue };
            assert!(reference.contains(&format!("| `{key}` |")), "{key}");
        }
    }
}
