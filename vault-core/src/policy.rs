//! Policies: path globs with capabilities. Deny by default; an explicit `deny` on any matching
//! rule wins over every grant.
//!
//! Globs follow Vault: a trailing `*` matches any suffix (across `/`), and `+` matches exactly
//! one path segment. Tenant-level operations (rotate, policy management) are checked against
//! the tenant root, the empty path, which `*` matches.
//!
//! Capabilities: `read list write delete rotate admin deny`, and for named keys `encrypt
//! decrypt sign verify rewrap datakey` (checked on the key's path `keys/<name>`). Grants from
//! all of a token's policies add up. A policy may list capabilities in `require_mfa`: [`decide`]
//! then answers [`Decision::AllowWithMfa`], and the caller's one-time code must check out.

use std::{collections::BTreeSet, fmt};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest policy name, and most rules per policy.
pub const MAX_POLICY_NAME_LEN: usize = 63;
pub const MAX_RULES: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    Read,
    List,
    Write,
    Delete,
    Rotate,
    Admin,
    Deny,
    /// Named keys (`keys/<name>`): encrypt with the key.
    Encrypt,
    /// Named keys: decrypt with the key.
    Decrypt,
    /// Named keys: sign, or compute an HMAC.
    Sign,
    /// Named keys: verify a signature or an HMAC.
    Verify,
    /// Named keys: re-wrap a ciphertext to the newest version (the plaintext is never returned).
    Rewrap,
    /// Named keys: generate a data key wrapped under the key.
    Datakey,
}

impl Capability {
    pub const ALL: [Capability; 13] = [
        Capability::Read,
        Capability::List,
        Capability::Write,
        Capability::Delete,
        Capability::Rotate,
        Capability::Admin,
        Capability::Deny,
        Capability::Encrypt,
        Capability::Decrypt,
        Capability::Sign,
        Capability::Verify,
        Capability::Rewrap,
        Capability::Datakey,
    ];

    pub fn parse(text: &str) -> Result<Capability> {
        Capability::ALL.into_iter().find(|c| c.as_str() == text).ok_or_else(|| {
            Error::invalid("capabilities", format!("unknown capability {text:?} (read, list, write, delete, rotate, admin, deny, encrypt, decrypt, sign, verify, rewrap, datakey)"))
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Read => "read",
            Capability::List => "list",
            Capability::Write => "write",
            Capability::Delete => "delete",
            Capability::Rotate => "rotate",
            Capability::Admin => "admin",
            Capability::Deny => "deny",
            Capability::Encrypt => "encrypt",
            Capability::Decrypt => "decrypt",
            Capability::Sign => "sign",
            Capability::Verify => "verify",
            Capability::Rewrap => "rewrap",
            Capability::Datakey => "datakey",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy's name: 1 to 63 of `a-z 0-9 - _`; `root` is reserved.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyName(String);

impl PolicyName {
    pub fn parse(name: &str) -> Result<PolicyName> {
        let field = "policy";
        if name.is_empty() || name.len() > MAX_POLICY_NAME_LEN {
            return Err(Error::invalid(
                field,
                format!("must be 1 to {MAX_POLICY_NAME_LEN} bytes"),
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
        if name == "root" {
            return Err(Error::invalid(field, "\"root\" is reserved"));
        }
        Ok(PolicyName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One rule: a path glob and what it grants (or denies).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub path: String,
    pub capabilities: BTreeSet<Capability>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub name: PolicyName,
    pub rules: Vec<Rule>,
    /// Capabilities this policy grants only together with a valid MFA code.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub require_mfa: BTreeSet<Capability>,
}

impl Policy {
    /// Validates raw rules (path glob, capability names) into a policy.
    pub fn new(name: PolicyName, rules: Vec<(String, Vec<String>)>) -> Result<Policy> {
        if rules.is_empty() {
            return Err(Error::invalid("rules", "a policy needs at least one rule"));
        }
        if rules.len() > MAX_RULES {
            return Err(Error::invalid(
                "rules",
                format!("at most {MAX_RULES} rules"),
            ));
        }
        let mut parsed = Vec::with_capacity(rules.len());
        for (index, (path, capabilities)) in rules.into_iter().enumerate() {
            check_glob(&path).map_err(|reason| {
                Error::invalid(
                    "rules",
                    format!("rule {}: path {path:?}: {reason}", index + 1),
                )
            })?;
            if capabilities.is_empty() {
                return Err(Error::invalid(
                    "rules",
                    format!("rule {}: no capabilities", index + 1),
                ));
            }
            let capabilities = capabilities
                .iter()
                .map(|c| Capability::parse(c))
                .collect::<Result<BTreeSet<_>>>()?;
            parsed.push(Rule { path, capabilities });
        }
        Ok(Policy {
            name,
            rules: parsed,
            require_mfa: BTreeSet::new(),
        })
    }

    /// Makes the named capabilities need an MFA code when this policy is what grants them.
    pub fn with_required_mfa(mut self, capabilities: &[String]) -> Result<Policy> {
        for name in capabilities {
            let capability = Capability::parse(name).map_err(|_| {
                Error::invalid("require_mfa", format!("unknown capability {name:?}"))
            })?;
            if capability == Capability::Deny {
                return Err(Error::invalid("require_mfa", "deny cannot require mfa"));
            }
            self.require_mfa.insert(capability);
        }
        Ok(self)
    }
}

pub(crate) fn check_glob(path: &str) -> std::result::Result<(), &'static str> {
    if path.len() > crate::names::MAX_PATH_LEN {
        return Err("too long");
    }
    if path.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    if path.starts_with('/') {
        return Err("must not start with '/'");
    }
    if path.find('*').is_some_and(|star| star != path.len() - 1) {
        return Err("'*' may only end the path");
    }
    let body = path.strip_suffix('*').unwrap_or(path);
    for segment in body.split('/') {
        if segment.contains('+') && segment != "+" {
            return Err("'+' must be a whole segment");
        }
        if segment == "." || segment == ".." {
            return Err("'.' and '..' are not segments");
        }
    }
    Ok(())
}

/// Whether `pattern` matches `path`.
pub fn glob_matches(pattern: &str, path: &str) -> bool {
    let (body, open) = match pattern.strip_suffix('*') {
        Some(body) => (body, true),
        None => (pattern, false),
    };
    let pattern_segments: Vec<&str> = body.split('/').collect();
    let mut path_rest = path;
    for (index, segment) in pattern_segments.iter().enumerate() {
        let last = index == pattern_segments.len() - 1;
        let (head, tail) = match path_rest.find('/') {
            Some(slash) => (&path_rest[..slash], Some(&path_rest[slash + 1..])),
            None => (path_rest, None),
        };
        if last {
            return if open {
                // The last piece is a prefix of whatever follows; `+*` is one non-empty
                // segment, then anything.
                if *segment == "+" {
                    !head.is_empty()
                } else {
                    path_rest.starts_with(segment)
                }
            } else if *segment == "+" {
                !head.is_empty() && tail.is_none()
            } else {
                path_rest == *segment
            };
        }
        let segment_ok = if *segment == "+" {
            !head.is_empty()
        } else {
            head == *segment
        };
        match tail {
            Some(rest) if segment_ok => path_rest = rest,
            _ => return false,
        }
    }
    false
}

/// The outcome of a check: allowed, or denied with the reason for the audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Allowed once the caller's MFA code checks out; names the policy that asks for it.
    AllowWithMfa(String),
    Deny(String),
}

/// Checks `capability` on `path` against a token's policies: some rule must grant it, and no
/// matching rule may deny. If any granting policy requires MFA for the capability, so does the
/// decision.
pub fn decide<P: std::borrow::Borrow<Policy>>(
    policies: &[P],
    path: &str,
    capability: Capability,
) -> Decision {
    let mut granted_by = None;
    let mut mfa_by = None;
    for policy in policies {
        let policy: &Policy = policy.borrow();
        for rule in &policy.rules {
            if !glob_matches(&rule.path, path) {
                continue;
            }
            if rule.capabilities.contains(&Capability::Deny) {
                return Decision::Deny(format!(
                    "policy {} denies {path:?} (rule {:?})",
                    policy.name.as_str(),
                    rule.path
                ));
            }
            if rule.capabilities.contains(&capability) {
                granted_by.get_or_insert(policy.name.as_str());
                if policy.require_mfa.contains(&capability) {
                    mfa_by.get_or_insert(policy.name.as_str());
                }
            }
        }
    }
    match (granted_by, mfa_by) {
        (Some(_), Some(policy)) => Decision::AllowWithMfa(policy.to_owned()),
        (Some(_), None) => Decision::Allow,
        (None, _) => Decision::Deny(format!("no policy grants {capability} on {path:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_forms() {
        let cases: &[(&str, &str, bool)] = &[
            ("db/primary", "db/primary", true),
            ("db/primary", "db/primary2", false),
            ("db/primary", "db", false),
            ("db/*", "db/primary", true),
            ("db/*", "db/a/b/c", true),
            ("db/*", "db/", true),
            ("db/*", "db", false),
            ("db/*", "dbx/a", false),
            ("db/p*", "db/primary", true),
            ("db/p*", "db/replica", false),
            ("*", "anything/at/all", true),
            ("*", "", true),
            ("db/+/password", "db/a/password", true),
            ("db/+/password", "db/a/b/password", false),
            ("db/+/password", "db//password", false),
            ("db/+", "db/a", true),
            ("db/+", "db/a/b", false),
            ("db/+", "db/", false),
            ("+/config", "app/config", true),
            ("+/config", "config", false),
            ("db/+/*", "db/a/x/y", true),
            ("db/+/*", "db/a", false),
            ("db/+*", "db/a/b", true),
            ("db/+*", "db/", false),
            ("", "", true),
            ("", "db", false),
        ];
        for (pattern, path, expected) in cases {
            assert_eq!(
                glob_matches(pattern, path),
                *expected,
                "{pattern:?} vs {path:?}"
            );
        }
    }

    fn policy(name: &str, rules: &[(&str, &[&str])]) -> Policy {
        let rules = rules
            .iter()
            .map(|(p, c)| ((*p).to_owned(), c.iter().map(|s| (*s).to_owned()).collect()))
            .collect();
        Policy::new(PolicyName::parse(name).expect("name"), rules).expect("policy")
    }

    #[test]
    fn deny_by_default_grants_union_and_explicit_deny_wins() {
        let reader = policy(
            "reader",
            &[("db/*", &["read", "list"]), ("db/admin/*", &["deny"])],
        );
        let writer = policy("writer", &[("db/app/*", &["write"])]);
        let both = [reader.clone(), writer];
        let cases: &[(&str, Capability, bool)] = &[
            ("db/app/x", Capability::Read, true),
            ("db/app/x", Capability::Write, true),
            ("db/app/x", Capability::Delete, false),
            ("db/other", Capability::Write, false),
            ("db/admin/root", Capability::Read, false),
            ("web/x", Capability::Read, false),
            ("", Capability::Rotate, false),
        ];
        for (path, capability, allowed) in cases {
            assert_eq!(
                decide(&both, path, *capability) == Decision::Allow,
                *allowed,
                "{capability} on {path:?}"
            );
        }
        // A deny in one policy beats a grant in another.
        let granting = policy("everything", &[("*", &["read"])]);
        assert!(
            matches!(decide(&[granting, reader], "db/admin/root", Capability::Read), Decision::Deny(reason) if reason.contains("denies"))
        );
        assert!(matches!(
            decide::<Policy>(&[], "x", Capability::Read),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn mfa_is_required_when_a_granting_policy_asks_for_it() {
        let guarded = policy("guarded", &[("*", &["rotate", "read"])])
            .with_required_mfa(&["rotate".to_owned()])
            .expect("mfa");
        let plain = policy("plain", &[("db/*", &["read"])]);
        let both = [guarded.clone(), plain.clone()];
        assert_eq!(
            decide(&both, "", Capability::Rotate),
            Decision::AllowWithMfa("guarded".into())
        );
        assert_eq!(decide(&both, "x", Capability::Read), Decision::Allow);
        // Another policy granting the same capability does not lift the requirement.
        assert_eq!(
            decide(&both, "db/x", Capability::Read),
            Decision::Allow,
            "read is not marked"
        );
        let rotating = policy("rotating", &[("*", &["rotate"])]);
        assert_eq!(
            decide(&[rotating, guarded.clone()], "", Capability::Rotate),
            Decision::AllowWithMfa("guarded".into())
        );
        // A deny still wins, and nothing is granted where no rule matches.
        let deny = policy("deny", &[("*", &["deny"])]);
        assert!(matches!(
            decide(&[guarded.clone(), deny], "", Capability::Rotate),
            Decision::Deny(_)
        ));
        assert!(matches!(
            decide(&[plain], "", Capability::Rotate),
            Decision::Deny(_)
        ));
        assert!(guarded.clone().with_required_mfa(&["deny".into()]).is_err());
        assert!(guarded.with_required_mfa(&["fly".into()]).is_err());
    }

    #[test]
    fn bad_policies_are_refused_naming_the_rule() {
        let name = || PolicyName::parse("p").expect("name");
        let error = |rules: Vec<(String, Vec<String>)>| {
            Policy::new(name(), rules)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            error(vec![]),
            "invalid rules: a policy needs at least one rule"
        );
        assert!(
            error(vec![("db/*/x".into(), vec!["read".into()])])
                .contains("rule 1: path \"db/*/x\": '*' may only end the path")
        );
        assert!(
            error(vec![("db/a+/x".into(), vec!["read".into()])])
                .contains("'+' must be a whole segment")
        );
        assert!(
            error(vec![("db/*".into(), vec!["fly".into()])]).contains("unknown capability \"fly\"")
        );
        assert!(error(vec![("db/*".into(), vec![])]).contains("rule 1: no capabilities"));
        assert!(PolicyName::parse("root").is_err());
        assert!(PolicyName::parse("Bad Name").is_err());
    }
}
