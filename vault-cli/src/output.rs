//! Printing results as text for people or JSON for scripts.

use std::io::Write;

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::Serialize;
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

/// A command's result: one value that serialises for `--format json` and renders as text for
/// people, so the two forms cannot drift apart.
pub trait Show: serde::Serialize {
    /// The text form, every line ending in a newline (empty: print nothing).
    fn text(&self) -> String;
}

/// Prints a result in the chosen format. The JSON is built in a buffer that is zeroized after
/// printing, since some results (init's shares, a secret's fields) carry credentials.
pub fn show<T: Show>(value: &T, format: crate::Format) -> crate::client::CliResult<()> {
    let out = match format {
        crate::Format::Json => {
            let mut buffer = Zeroizing::new(Vec::with_capacity(1024));
            serde_json::to_writer(&mut *buffer, value).map_err(|e| {
                crate::client::CliError::new(format!("cannot write the result as JSON: {e}"))
            })?;
            buffer.push(b'\n');
            buffer
        }
        crate::Format::Text => Zeroizing::new(value.text().into_bytes()),
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .map_err(|e| crate::client::CliError::new(format!("cannot write to standard output: {e}")))
}

/// Aligned `label  value` rows as text.
pub fn rows_text(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(label, value)| format!("{label:<width$}  {value}\n"))
        .collect()
}

/// `text`, or `placeholder` when it is empty (e.g. a time that is not set: "never").
pub fn text_or(text: &str, placeholder: &str) -> String {
    if text.is_empty() {
        placeholder.to_owned()
    } else {
        text.to_owned()
    }
}

/// A command that changed one named thing: `{"<key>": name, "<flag>": true}` as JSON, and a
/// sentence as text (e.g. `policy write`: `{"name": .., "written": true}`, "Wrote policy ..").
pub struct Done {
    key: &'static str,
    name: String,
    flag: &'static str,
    /// The text, one line.
    text: String,
}

impl Done {
    pub fn new(key: &'static str, name: String, flag: &'static str, text: String) -> Self {
        Done {
            key,
            name,
            flag,
            text,
        }
    }

    /// `{"name": .., "written": true}`, "Wrote <what> <name>."
    pub fn written(what: &str, name: String) -> Self {
        let text = format!("Wrote {what} {name}.");
        Done::new("name", name, "written", text)
    }

    /// `{"name": .., "deleted": true}`, "Deleted <what> <name>."
    pub fn deleted(what: &str, name: String) -> Self {
        let text = format!("Deleted {what} {name}.");
        Done::new("name", name, "deleted", text)
    }
}

impl Serialize for Done {
    fn serialize<S: serde::Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = out.serialize_map(Some(2))?;
        map.serialize_entry(self.key, &self.name)?;
        map.serialize_entry(self.flag, &true)?;
        map.end()
    }
}

impl Show for Done {
    fn text(&self) -> String {
        format!("{}\n", self.text)
    }
}

/// A result of one field: `{"<key>": value}` as JSON, and the given text (e.g. `policy list`:
/// `{"names": [..]}`, one name a line).
pub struct Field<T> {
    key: &'static str,
    value: T,
    text: String,
}

impl<T> Field<T> {
    /// `text`: every line ending in a newline.
    pub fn new(key: &'static str, value: T, text: String) -> Self {
        Field { key, value, text }
    }
}

impl Field<Vec<String>> {
    /// A list, one item a line as text.
    pub fn lines(key: &'static str, items: Vec<String>) -> Self {
        let text = items.iter().map(|item| format!("{item}\n")).collect();
        Field::new(key, items, text)
    }
}

impl<T: Serialize> Serialize for Field<T> {
    fn serialize<S: serde::Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = out.serialize_map(Some(1))?;
        map.serialize_entry(self.key, &self.value)?;
        map.end()
    }
}

impl<T: Serialize> Show for Field<T> {
    fn text(&self) -> String {
        self.text.clone()
    }
}

/// A result that serialises as its value and has a text of its own (e.g. `tenant create`: the
/// tenant as `tenant show` prints it as JSON, and "Created tenant .." as text).
pub struct Described<T> {
    value: T,
    text: String,
}

impl<T> Described<T> {
    /// `text`: every line ending in a newline.
    pub fn new(value: T, text: String) -> Self {
        Described { value, text }
    }
}

impl<T: Serialize> Serialize for Described<T> {
    fn serialize<S: serde::Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(out)
    }
}

impl<T: Serialize> Show for Described<T> {
    fn text(&self) -> String {
        self.text.clone()
    }
}
