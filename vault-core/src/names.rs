//! Names parsed once at the edge: tenant names, tenant ids, secret paths and list prefixes.
//! The rest of the core only ever sees these types, never a raw string it must re-check.

use std::fmt;

use crate::error::{Error, Result};

/// Longest secret path, in bytes.
pub const MAX_PATH_LEN: usize = 512;
/// Longest tenant name, in bytes.
pub const MAX_TENANT_NAME_LEN: usize = 63;
/// Longest secret field name, in bytes.
pub const MAX_FIELD_NAME_LEN: usize = 256;

/// A tenant's name as callers write it: 1 to 63 of `a-z 0-9 - _`, starting with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantName(String);

impl TenantName {
    pub fn parse(name: &str) -> Result<Self> {
        let field = "tenant";
        if name.is_empty() {
            return Err(Error::invalid(field, "must not be empty"));
        }
        if name.len() > MAX_TENANT_NAME_LEN {
            return Err(Error::invalid(
                field,
                format!("longer than {MAX_TENANT_NAME_LEN} bytes"),
            ));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(Error::invalid(
                field,
                "may contain only a-z, 0-9, '-' and '_'",
            ));
        }
        if !name.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(Error::invalid(field, "must start with a letter or digit"));
        }
        Ok(TenantName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant's immutable id: 16 lower-case hex digits, random at creation. Storage keys and
/// ciphertext bindings use the id, so a name can never be re-used to reach old data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId([u8; 8]);

impl TenantId {
    pub fn generate() -> Result<Self> {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|_| Error::Rng)?;
        Ok(TenantId(id))
    }

    pub fn parse_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        Some(TenantId(bytes.try_into().ok()?))
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// The id's eight bytes (what its hex spells).
    pub fn to_bytes(self) -> [u8; 8] {
        self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A secret's path inside a tenant: `/`-separated segments, each non-empty, none `.` or `..`,
/// no control characters, at most [`MAX_PATH_LEN`] bytes, no leading or trailing `/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretPath(String);

impl SecretPath {
    pub fn parse(path: &str) -> Result<Self> {
        let field = "path";
        if path.is_empty() {
            return Err(Error::invalid(field, "must not be empty"));
        }
        if path.ends_with('/') {
            return Err(Error::invalid(
                field,
                "must not end in '/' (that names a folder)",
            ));
        }
        check_segments(field, path)?;
        Ok(SecretPath(path.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A folder to list: empty (the tenant's top level) or a path ending in `/`. A prefix given
/// without the trailing `/` is taken as that folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderPrefix(String);

impl FolderPrefix {
    pub fn parse(prefix: &str) -> Result<Self> {
        let field = "prefix";
        if prefix.is_empty() {
            return Ok(FolderPrefix(String::new()));
        }
        let folder = prefix.strip_suffix('/').unwrap_or(prefix);
        check_segments(field, folder)?;
        Ok(FolderPrefix(format!("{folder}/")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_segments(field: &'static str, path: &str) -> Result<()> {
    if path.len() > MAX_PATH_LEN {
        return Err(Error::invalid(
            field,
            format!("longer than {MAX_PATH_LEN} bytes"),
        ));
    }
    if path.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            "must not contain NUL or control characters",
        ));
    }
    for (index, segment) in path.split('/').enumerate() {
        let position = index + 1;
        match segment {
            "" => {
                return Err(Error::invalid(
                    field,
                    format!("segment {position} is empty"),
                ));
            }
            "." | ".." => {
                return Err(Error::invalid(
                    field,
                    format!("segment {position} is '{segment}'"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a secret field name: non-empty, at most [`MAX_FIELD_NAME_LEN`] bytes, no control
/// characters.
pub fn check_field_name(name: &str) -> Result<()> {
    let field = "data";
    if name.is_empty() {
        return Err(Error::invalid(field, "a field name is empty"));
    }
    if name.len() > MAX_FIELD_NAME_LEN {
        return Err(Error::invalid(
            field,
            format!("a field name is longer than {MAX_FIELD_NAME_LEN} bytes"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            "a field name contains a control character",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(result: Result<impl Sized>) -> String {
        match result {
            Ok(_) => "ok".into(),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn tenant_names() {
        let cases = [
            ("acme", "ok"),
            ("acme-2_prod", "ok"),
            ("", "invalid tenant: must not be empty"),
            (
                "Acme",
                "invalid tenant: may contain only a-z, 0-9, '-' and '_'",
            ),
            (
                "a/b",
                "invalid tenant: may contain only a-z, 0-9, '-' and '_'",
            ),
            ("-acme", "invalid tenant: must start with a letter or digit"),
        ];
        for (input, expected) in cases {
            assert_eq!(reason(TenantName::parse(input)), expected, "{input:?}");
        }
        assert_eq!(
            reason(TenantName::parse(&"a".repeat(64))),
            "invalid tenant: longer than 63 bytes"
        );
    }

    #[test]
    fn secret_paths() {
        let cases = [
            ("db/primary", "ok"),
            ("a", "ok"),
            ("with space/and.dots/x..y", "ok"),
            ("", "invalid path: must not be empty"),
            (
                "db/",
                "invalid path: must not end in '/' (that names a folder)",
            ),
            ("/db", "invalid path: segment 1 is empty"),
            ("db//primary", "invalid path: segment 2 is empty"),
            ("db/../etc", "invalid path: segment 2 is '..'"),
            ("./db", "invalid path: segment 1 is '.'"),
            (
                "db\0x",
                "invalid path: must not contain NUL or control characters",
            ),
            (
                "db\nx",
                "invalid path: must not contain NUL or control characters",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(reason(SecretPath::parse(input)), expected, "{input:?}");
        }
        assert_eq!(reason(SecretPath::parse(&"a".repeat(512))), "ok");
        assert_eq!(
            reason(SecretPath::parse(&"a".repeat(513))),
            "invalid path: longer than 512 bytes"
        );
    }

    #[test]
    fn folder_prefixes() {
        assert_eq!(
            FolderPrefix::parse("").map(|p| p.0).ok().as_deref(),
            Some("")
        );
        assert_eq!(
            FolderPrefix::parse("db").map(|p| p.0).ok().as_deref(),
            Some("db/")
        );
        assert_eq!(
            FolderPrefix::parse("db/").map(|p| p.0).ok().as_deref(),
            Some("db/")
        );
        assert_eq!(
            reason(FolderPrefix::parse("db//")),
            "invalid prefix: segment 2 is empty"
        );
        assert_eq!(
            reason(FolderPrefix::parse("../")),
            "invalid prefix: segment 1 is '..'"
        );
    }
}
