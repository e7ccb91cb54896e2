//! Printing results as text for people or JSON for scripts.

use std::io::Write;

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

/// Prints a JSON value on one line.
pub fn print_json(value: &Value) {
    println!("{value}");
}

/// Prints aligned `label  value` rows.
pub fn print_rows(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    for (label, value) in rows {
        println!("{label:<width$}  {value}");
    }
}

/// Secret fields as JSON: UTF-8 values under "data", others base64 under "data_base64".
pub fn fields_json(fields: &[(&String, &Vec<u8>)]) -> (Value, Value) {
    let mut text = Map::new();
    let mut binary = Map::new();
    for (name, value) in fields {
        match std::str::from_utf8(value) {
            Ok(string) => text.insert((*name).clone(), json!(string)),
            Err(_) => binary.insert((*name).clone(), json!(STANDARD.encode(value))),
        };
    }
    (Value::Object(text), Value::Object(binary))
}

/// A field value for a terminal: the text, or base64 with a marker when it is not UTF-8.
pub fn field_text(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) => text.to_owned(),
        Err(_) => format!("base64:{}", STANDARD.encode(value)),
    }
}

/// Writes raw bytes to stdout (for `get --field`), with a newline when stdout is a terminal.
pub fn write_raw(value: &[u8]) -> std::io::Result<()> {
    use std::io::IsTerminal;
    let mut out = std::io::stdout().lock();
    out.write_all(value)?;
    if std::io::stdout().is_terminal() {
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// A JSON string literal for `text`, built in a buffer that is zeroized on drop.
pub fn json_string(text: &str) -> Zeroizing<String> {
    Zeroizing::new(serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned()))
}
