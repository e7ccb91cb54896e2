//! `vault-cli render`: fill a template with secrets and write the result to a file.
//!
//! Template syntax: text, with actions in `{{ }}`:
//! - `{{ secret "db/primary" "password" }}`: the field's value, as is;
//! - `{{ "{{" }}`: a quoted string, as is (how to write a literal `{{`).
//!
//! The file is written atomically with mode 0600 (a new temporary file beside it, synced, then
//! renamed over it), and only once every referenced field was read: a missing secret or field
//! fails naming it and leaves the file as it was. With `--watch`, a change to a referenced
//! secret renders again; when the result differs, the file is replaced and `--on-change` runs.

use std::{collections::BTreeSet, path::PathBuf};

use serde_json::json;
use vault_client::SecretValue;
use vault_core::files::write_private;
use zeroize::Zeroizing;

use crate::{
    Format,
    client::{CliError, CliResult, Ctx},
    output::print_json,
    sources::{self, Changes, FieldRef},
};

#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    /// Tenant that owns the secrets.
    #[arg(long, env = "VAULT_TENANT")]
    pub tenant: String,
    /// The template file.
    pub template: PathBuf,
    /// Where to write the result (mode 0600, replaced atomically).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Keep running: render again when a referenced secret changes.
    #[arg(long)]
    pub watch: bool,
    /// With --watch: a shell command to run after each re-render that changed the file.
    #[arg(long, value_name = "CMD", requires = "watch")]
    pub on_change: Option<String>,
}

enum Piece {
    Text(String),
    /// The index of the field in the template's references.
    Field(usize),
}

struct Template {
    pieces: Vec<Piece>,
    fields: Vec<FieldRef>,
}

/// Line and column (both from 1, the column in characters) of a byte offset, for messages.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The byte offset of the `}}` that closes an action starting at `from`, skipping quoted
/// strings (which may contain `}}`).
fn closing(text: &str, from: usize) -> Option<usize> {
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.get(from..)?.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '}' if !in_string && text[from + i..].starts_with("}}") => return Some(from + i),
            _ => {}
        }
    }
    None
}

/// The quoted strings of an action, e.g. `secret "a" "b"` -> (secret, [a, b]).
fn words(action: &str) -> Result<(String, Vec<String>), String> {
    let mut chars = action.trim().chars().peekable();
    let mut name = String::new();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || c == '"' {
            break;
        }
        name.push(c);
        chars.next();
    }
    let mut strings = Vec::new();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => break,
            Some('"') => {}
            Some(other) => return Err(format!("unexpected {other:?}; arguments are \"quoted\"")),
        }
        let mut string = String::new();
        loop {
            match chars.next() {
                None => return Err("unterminated string".to_owned()),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some(c @ ('"' | '\\')) => string.push(c),
                    Some('n') => string.push('\n'),
                    _ => return Err("unknown escape (\\\", \\\\ and \\n are known)".to_owned()),
                },
                Some(c) => string.push(c),
            }
        }
        strings.push(string);
    }
    Ok((name, strings))
}

fn parse(text: &str, name: &str) -> CliResult<Template> {
    let mut pieces = Vec::new();
    let mut fields = Vec::new();
    let mut rest = 0;
    while let Some(open) = text[rest..].find("{{").map(|i| rest + i) {
        if open > rest {
            pieces.push(Piece::Text(text[rest..open].to_owned()));
        }
        let at = |offset: usize| {
            let (line, column) = position(text, offset);
            format!("{name}:{line}:{column}")
        };
        let close = closing(text, open + 2)
            .ok_or_else(|| CliError::new(format!("{}: '{{{{' is never closed", at(open))))?;
        let action = &text[open + 2..close];
        let (function, arguments) =
            words(action).map_err(|e| CliError::new(format!("{}: {e}", at(open))))?;
        match (function.as_str(), arguments.as_slice()) {
            ("secret", [path, field]) if !path.is_empty() && !field.is_empty() => {
                fields.push(FieldRef {
                    path: path.clone(),
                    field: field.clone(),
                    origin: at(open),
                });
                pieces.push(Piece::Field(fields.len() - 1));
            }
            ("secret", _) => {
                return Err(CliError::new(format!(
                    "{}: secret takes a path and a field: {{{{ secret \"db/primary\" \"password\" }}}}",
                    at(open)
                )));
            }
            ("", [literal]) => pieces.push(Piece::Text(literal.clone())),
            (other, _) => {
                return Err(CliError::new(format!(
                    "{}: unknown action {other:?}; the template knows {{{{ secret \"PATH\" \"FIELD\" }}}} \
                     and {{{{ \"text\" }}}}",
                    at(open)
                )));
            }
        }
        rest = close + 2;
    }
    if rest < text.len() {
        pieces.push(Piece::Text(text[rest..].to_owned()));
    }
    Ok(Template { pieces, fields })
}

impl Template {
    fn render(&self, values: &[SecretValue]) -> Zeroizing<Vec<u8>> {
        let size = self
            .pieces
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => text.len(),
                Piece::Field(index) => values.get(*index).map_or(0, |v| v.expose().len()),
            })
            .sum();
        // Sized up front: a growing buffer would leave un-zeroized copies behind.
        let mut out = Zeroizing::new(Vec::with_capacity(size));
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.extend_from_slice(text.as_bytes()),
                Piece::Field(index) => {
                    if let Some(value) = values.get(*index) {
                        out.extend_from_slice(value.expose());
                    }
                }
            }
        }
        out
    }
}

fn write(args: &RenderArgs, contents: &[u8]) -> CliResult<()> {
    write_private(&args.out, contents)
        .map_err(|e| CliError::new(format!("--out {}: {e}", args.out.display())))
}

fn report(args: &RenderArgs, format: Format, template: &Template) {
    let secrets: BTreeSet<&str> = template.fields.iter().map(|f| f.path.as_str()).collect();
    match format {
        Format::Json => print_json(&json!({
            "rendered": args.out.display().to_string(),
            "secrets": secrets.len(),
        })),
        Format::Text => println!(
            "wrote {} ({} secret{})",
            args.out.display(),
            secrets.len(),
            if secrets.len() == 1 { "" } else { "s" }
        ),
    }
}

/// Runs the hook through the shell and reports a failure (the watch goes on).
async fn on_change(command: &str) {
    match tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env_remove("VAULT_TOKEN")
        .status()
        .await
    {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("vault-cli: warning: --on-change exited with {status}"),
        Err(e) => eprintln!("vault-cli: warning: cannot run --on-change: {e}"),
    }
}

pub async fn render(ctx: &Ctx, format: Format, args: RenderArgs) -> CliResult<()> {
    let name = args.template.display().to_string();
    let text = std::fs::read_to_string(&args.template)
        .map_err(|e| CliError::new(format!("template {name}: {e}")))?;
    let template = parse(&text, &name)?;
    let client = sources::client(ctx, args.watch).await?;
    let mut changes = if args.watch {
        let paths = template.fields.iter().map(|f| f.path.clone()).collect();
        Some(Changes::open(&client, &args.tenant, paths).await?)
    } else {
        None
    };
    let values = sources::resolve(&client, &args.tenant, &template.fields).await?;
    let mut current = template.render(&values);
    write(&args, &current)?;
    report(&args, format, &template);
    let Some(changes) = changes.as_mut() else {
        return Ok(());
    };
    loop {
        changes.next().await?;
        let values = match sources::resolve(&client, &args.tenant, &template.fields).await {
            Ok(values) => values,
            Err(error) => {
                eprintln!(
                    "vault-cli: warning: {}; {} keeps its last rendering",
                    error.message,
                    args.out.display()
                );
                continue;
            }
        };
        let rendered = template.render(&values);
        if rendered.as_slice() == current.as_slice() {
            continue;
        }
        write(&args, &rendered)?;
        current = rendered;
        report(&args, format, &template);
        if let Some(command) = &args.on_change {
            on_change(command).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(template: &Template) -> Vec<(&str, &str, &str)> {
        template
            .fields
            .iter()
            .map(|f| (f.path.as_str(), f.field.as_str(), f.origin.as_str()))
            .collect()
    }

    /// Fuzz target (`vault-fuzz`): any template text parses or is refused with a position,
    /// never a panic.
    #[test]
    fn fuzz_template() {
        vault_fuzz::run(
            env!("CARGO_MANIFEST_DIR"),
            "template",
            &[
                b"url={{ secret \"db/primary\" \"url\" }}\n",
                b"{{ \"lit\\\"eral\" }} {{secret \"a\" \"b\"}}",
                b"{{",
                b"}}{{ secret }}",
            ],
            |bytes| {
                let text = String::from_utf8_lossy(bytes);
                if let Ok(template) = parse(&text, "fuzz.tmpl") {
                    let _ = fields(&template);
                }
            },
        );
    }

    #[test]
    fn parses_secrets_literals_and_text() {
        let template = parse(
            "user={{ secret \"db/primary\" \"user\" }}\npass={{secret \"db/primary\" \"pass\"}} {{ \"{{\" }}",
            "t",
        )
        .expect("parses");
        assert_eq!(
            fields(&template),
            vec![
                ("db/primary", "user", "t:1:6"),
                ("db/primary", "pass", "t:2:6")
            ]
        );
        let values = vec![
            SecretValue::new(b"app".to_vec()),
            SecretValue::new(b"s3".to_vec()),
        ];
        assert_eq!(
            template.render(&values).as_slice(),
            b"user=app\npass=s3 {{".as_slice()
        );
    }

    #[test]
    fn errors_name_the_place_and_the_problem() {
        let error = |text: &str| match parse(text, "t") {
            Ok(_) => panic!("{text:?} parsed"),
            Err(error) => error.message,
        };
        assert!(
            error("a\n b {{ secret \"x\" }}").starts_with("t:2:4: secret takes a path and a field")
        );
        assert!(error("{{ secret \"x\" \"y\"").contains("t:1:1: '{{' is never closed"));
        assert!(error("{{ env \"HOME\" }}").contains("unknown action \"env\""));
        assert!(error("{{ secret \"x }}").contains("never closed"));
        assert!(error("{{ secret x y }}").contains("arguments are \"quoted\""));
        // Columns count characters, not bytes.
        assert!(error("é€{{ nope }}").starts_with("t:1:3: unknown action"));
    }

    #[test]
    fn braces_inside_strings_do_not_close_an_action() {
        let template = parse("{{ \"}}\" }}-{{ secret \"a}}b\" \"f\" }}", "t").expect("parses");
        assert_eq!(fields(&template), vec![("a}}b", "f", "t:1:12")]);
        let values = vec![SecretValue::new(b"v".to_vec())];
        assert_eq!(template.render(&values).as_slice(), b"}}-v".as_slice());
    }
}
