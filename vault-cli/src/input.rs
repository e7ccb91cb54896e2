//! Reading input: unseal shares, secret field values, TOML files, and durations (`30m`, `1h`,
//! `7d`).

use std::{
    collections::HashMap,
    io::{IsTerminal, Read},
    path::Path,
    time::Duration,
};

use zeroize::Zeroizing;

use crate::client::{CliError, CliResult};

/// One secret line from a hidden prompt (terminal) or standard input; `what` names it in errors.
pub fn read_secret_line(prompt: &str, what: &str) -> CliResult<Zeroizing<String>> {
    let text = if std::io::stdin().is_terminal() {
        Zeroizing::new(
            rpassword::prompt_password(prompt)
                .map_err(|e| CliError::new(format!("cannot read the {what}: {e}")))?,
        )
    } else {
        let mut text = Zeroizing::new(String::new());
        std::io::stdin().read_to_string(&mut text).map_err(|e| {
            CliError::new(format!("cannot read the {what} from standard input: {e}"))
        })?;
        text
    };
    trimmed(&text, what)
}

/// `text` without the white space around it; empty is an error that names `what`.
fn trimmed(text: &str, what: &str) -> CliResult<Zeroizing<String>> {
    let trimmed = Zeroizing::new(text.trim().to_owned());
    if trimmed.is_empty() {
        return Err(CliError::new(format!("{what}: empty input")));
    }
    Ok(trimmed)
}

/// The share from --share-file, a hidden prompt (terminal) or standard input.
pub fn read_share(file: Option<&Path>) -> CliResult<Zeroizing<String>> {
    let Some(path) = file else {
        return read_secret_line("Unseal share (input hidden): ", "share");
    };
    let text =
        Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            CliError::new(format!("cannot read share file {}: {e}", path.display()))
        })?);
    trimmed(&text, "share")
}

/// Parses NAME=VALUE, NAME=@FILE and NAME=- arguments into field values.
pub fn read_fields(arguments: &[String]) -> CliResult<HashMap<String, Vec<u8>>> {
    let mut fields = HashMap::new();
    let mut stdin_used = false;
    for (index, argument) in arguments.iter().enumerate() {
        let Some((name, value)) = argument.split_once('=') else {
            // Named by position, never echoed: a mistyped argument is often the secret itself.
            return Err(CliError::with_hint(
                format!("field argument {} is not NAME=VALUE", index + 1),
                "use NAME=VALUE, NAME=@FILE or NAME=- (standard input)",
            ));
        };
        if name.is_empty() {
            return Err(CliError::new(
                "a field argument has an empty NAME before '='",
            ));
        }
        let bytes = if value == "-" {
            if stdin_used {
                return Err(CliError::new(format!(
                    "field {name}: standard input can be read for one field only"
                )));
            }
            stdin_used = true;
            let mut buffer = Vec::new();
            std::io::stdin().read_to_end(&mut buffer).map_err(|e| {
                CliError::new(format!("field {name}: cannot read standard input: {e}"))
            })?;
            buffer
        } else if let Some(path) = value.strip_prefix('@') {
            std::fs::read(path)
                .map_err(|e| CliError::new(format!("field {name}: cannot read {path}: {e}")))?
        } else {
            value.as_bytes().to_vec()
        };
        if fields.insert(name.to_owned(), bytes).is_some() {
            return Err(CliError::new(format!("field {name} is given twice")));
        }
    }
    Ok(fields)
}

/// A TOML file, parsed; errors name the file.
pub fn read_toml<T: serde::de::DeserializeOwned>(file: &Path) -> CliResult<T> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::new(format!("cannot read {}: {e}", file.display())))?;
    toml::from_str(&text).map_err(|e| CliError::new(format!("{}: {}", file.display(), e.message())))
}

/// `30s`, `15m`, `1h`, `7d`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30m, 1h or 7d"))?;
    let seconds = match unit {
        "" | "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        "d" => value * 86_400,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (s, m, h, d)")),
    };
    Ok(Duration::from_secs(seconds))
}
