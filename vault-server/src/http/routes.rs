//! The HTTP API's one mapping table: HTTP method and path → the gRPC method it becomes (whose
//! row in [`crate::rpcs::RPCS`] says what capability it needs) → the module that maps it.
//!
//! Patterns are relative to `/v1/`: a literal segment, `:name` (one segment) or `*path` (the
//! rest, one segment or more; `*path?` may be empty). `LIST` is Vault's list verb; a `GET`
//! with `list=true` is the same. `tests/it/http.rs` walks every row with a token holding each
//! single capability, from the `example` path and body given here.

use http::{Method, StatusCode};

use super::{
    Gateway, Incoming, kv,
    reply::{Answer, Failure},
    sys, token, transit,
};

/// What a route does (the mapping modules' functions, one each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Health,
    SealStatus,
    InitStatus,
    Init,
    Unseal,
    Seal,
    Leader,
    Mounts,
    UiMount,
    Rotate,
    KvRead,
    KvWrite,
    KvPatch,
    KvDeleteLatest,
    KvReadMetadata,
    KvList,
    KvWriteMetadata,
    KvDeleteMetadata,
    KvDelete,
    KvUndelete,
    KvDestroy,
    KeyCreate,
    KeyRead,
    KeyList,
    KeyDelete,
    KeyConfig,
    KeyRotate,
    KeyTrim,
    Encrypt,
    Decrypt,
    Rewrap,
    DataKey,
    Sign,
    Verify,
    Hmac,
    LookupSelf,
    RenewSelf,
    RevokeSelf,
    CreateToken,
    Lookup,
    LookupAccessor,
    Revoke,
    RevokeAccessor,
    AppRoleLogin,
    JwtLogin,
}

/// One row.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub methods: &'static [&'static str],
    pub pattern: &'static str,
    /// The gRPC method (`Secrets/Get`); `None`: answered without one (`sys/health`, unaudited
    /// like gRPC health).
    pub rpc: Option<&'static str>,
    pub endpoint: Endpoint,
    /// A path and body that reach the route, for the tests that walk the table.
    pub example: &'static str,
    pub example_body: &'static str,
}

const READ: &[&str] = &["GET"];
const WRITE: &[&str] = &["POST", "PUT"];
const LIST: &[&str] = &["LIST"];
const DELETE: &[&str] = &["DELETE"];

macro_rules! route {
    ($methods:expr, $pattern:literal, $rpc:expr, $endpoint:ident, $example:literal, $body:literal) => {
        Route {
            methods: $methods,
            pattern: $pattern,
            rpc: $rpc,
            endpoint: Endpoint::$endpoint,
            example: $example,
            example_body: $body,
        }
    };
}

/// Every route, most specific first where patterns overlap.
pub const ROUTES: &[Route] = &[
    // sys/
    route!(
        &["GET", "HEAD"],
        "sys/health",
        None,
        Health,
        "sys/health",
        ""
    ),
    route!(
        READ,
        "sys/seal-status",
        Some("System/Status"),
        SealStatus,
        "sys/seal-status",
        ""
    ),
    route!(
        READ,
        "sys/init",
        Some("System/Status"),
        InitStatus,
        "sys/init",
        ""
    ),
    route!(
        WRITE,
        "sys/init",
        Some("System/Init"),
        Init,
        "sys/init",
        r#"{"secret_shares": 1, "secret_threshold": 1}"#
    ),
    route!(
        WRITE,
        "sys/unseal",
        Some("System/Unseal"),
        Unseal,
        "sys/unseal",
        r#"{"reset": true}"#
    ),
    route!(WRITE, "sys/seal", Some("System/Seal"), Seal, "sys/seal", ""),
    route!(
        READ,
        "sys/leader",
        Some("System/Status"),
        Leader,
        "sys/leader",
        ""
    ),
    route!(
        READ,
        "sys/mounts",
        Some("Tokens/LookupToken"),
        Mounts,
        "sys/mounts",
        ""
    ),
    route!(
        READ,
        "sys/internal/ui/mounts/*path",
        Some("Tokens/LookupToken"),
        UiMount,
        "sys/internal/ui/mounts/secret",
        ""
    ),
    route!(
        WRITE,
        "sys/rotate",
        Some("System/Rotate"),
        Rotate,
        "sys/rotate",
        ""
    ),
    // KV v2 at secret/
    route!(
        READ,
        "secret/data/*path",
        Some("Secrets/Get"),
        KvRead,
        "secret/data/walk/one",
        ""
    ),
    route!(
        WRITE,
        "secret/data/*path",
        Some("Secrets/Put"),
        KvWrite,
        "secret/data/walk/one",
        r#"{"data": {"k": "v"}}"#
    ),
    route!(
        &["PATCH"],
        "secret/data/*path",
        Some("Secrets/Patch"),
        KvPatch,
        "secret/data/walk/one",
        r#"{"data": {"k": "w"}}"#
    ),
    route!(
        DELETE,
        "secret/data/*path",
        Some("Secrets/Delete"),
        KvDeleteLatest,
        "secret/data/walk/one",
        ""
    ),
    route!(
        LIST,
        "secret/metadata/*path?",
        Some("Secrets/List"),
        KvList,
        "secret/metadata/walk/",
        ""
    ),
    route!(
        READ,
        "secret/metadata/*path",
        Some("Secrets/ReadMetadata"),
        KvReadMetadata,
        "secret/metadata/walk/one",
        ""
    ),
    route!(
        WRITE,
        "secret/metadata/*path",
        Some("Secrets/UpdateMetadata"),
        KvWriteMetadata,
        "secret/metadata/walk/one",
        r#"{"custom_metadata": {"owner": "walk"}}"#
    ),
    route!(
        DELETE,
        "secret/metadata/*path",
        Some("Secrets/DeleteMetadata"),
        KvDeleteMetadata,
        "secret/metadata/walk/gone",
        ""
    ),
    route!(
        WRITE,
        "secret/delete/*path",
        Some("Secrets/Delete"),
        KvDelete,
        "secret/delete/walk/one",
        r#"{"versions": [1]}"#
    ),
    route!(
        WRITE,
        "secret/undelete/*path",
        Some("Secrets/Undelete"),
        KvUndelete,
        "secret/undelete/walk/one",
        r#"{"versions": [1]}"#
    ),
    route!(
        WRITE,
        "secret/destroy/*path",
        Some("Secrets/Destroy"),
        KvDestroy,
        "secret/destroy/walk/one",
        r#"{"versions": [1]}"#
    ),
    // transit/
    route!(
        LIST,
        "transit/keys",
        Some("Kms/ListKeys"),
        KeyList,
        "transit/keys",
        ""
    ),
    route!(
        WRITE,
        "transit/keys/:name/config",
        Some("Kms/UpdateKey"),
        KeyConfig,
        "transit/keys/walk/config",
        r#"{"deletion_allowed": true}"#
    ),
    route!(
        WRITE,
        "transit/keys/:name/rotate",
        Some("Kms/RotateKey"),
        KeyRotate,
        "transit/keys/walk/rotate",
        ""
    ),
    route!(
        WRITE,
        "transit/keys/:name/trim",
        Some("Kms/TrimKey"),
        KeyTrim,
        "transit/keys/walk/trim",
        r#"{"min_available_version": 1}"#
    ),
    route!(
        WRITE,
        "transit/keys/:name",
        Some("Kms/CreateKey"),
        KeyCreate,
        "transit/keys/walk-new",
        ""
    ),
    route!(
        READ,
        "transit/keys/:name",
        Some("Kms/ReadKey"),
        KeyRead,
        "transit/keys/walk",
        ""
    ),
    route!(
        DELETE,
        "transit/keys/:name",
        Some("Kms/DeleteKey"),
        KeyDelete,
        "transit/keys/walk-gone",
        ""
    ),
    route!(
        WRITE,
        "transit/encrypt/:name",
        Some("Kms/Encrypt"),
        Encrypt,
        "transit/encrypt/walk",
        r#"{"plaintext": "aGk="}"#
    ),
    route!(
        WRITE,
        "transit/decrypt/:name",
        Some("Kms/Decrypt"),
        Decrypt,
        "transit/decrypt/walk",
        r#"{"ciphertext": "vault:v1:AAAA"}"#
    ),
    route!(
        WRITE,
        "transit/rewrap/:name",
        Some("Kms/Rewrap"),
        Rewrap,
        "transit/rewrap/walk",
        r#"{"ciphertext": "vault:v1:AAAA"}"#
    ),
    route!(
        WRITE,
        "transit/datakey/:kind/:name",
        Some("Kms/GenerateDataKey"),
        DataKey,
        "transit/datakey/wrapped/walk",
        ""
    ),
    route!(
        WRITE,
        "transit/sign/:name/*algorithm?",
        Some("Kms/Sign"),
        Sign,
        "transit/sign/walk-sign",
        r#"{"input": "aGk="}"#
    ),
    route!(
        WRITE,
        "transit/verify/:name/*algorithm?",
        Some("Kms/Verify"),
        Verify,
        "transit/verify/walk-sign",
        r#"{"input": "aGk=", "signature": "vault:v1:AAAA"}"#
    ),
    route!(
        WRITE,
        "transit/hmac/:name/*algorithm?",
        Some("Kms/Hmac"),
        Hmac,
        "transit/hmac/walk-hmac",
        r#"{"input": "aGk="}"#
    ),
    // auth/
    route!(
        &["GET", "POST"],
        "auth/token/lookup-self",
        Some("Tokens/LookupToken"),
        LookupSelf,
        "auth/token/lookup-self",
        ""
    ),
    route!(
        WRITE,
        "auth/token/renew-self",
        Some("Tokens/RenewToken"),
        RenewSelf,
        "auth/token/renew-self",
        ""
    ),
    route!(
        WRITE,
        "auth/token/revoke-self",
        Some("Tokens/RevokeToken"),
        RevokeSelf,
        "auth/token/revoke-self",
        ""
    ),
    route!(
        WRITE,
        "auth/token/create",
        Some("Tokens/CreateToken"),
        CreateToken,
        "auth/token/create",
        r#"{"policies": ["walk"], "ttl": "1h"}"#
    ),
    route!(
        WRITE,
        "auth/token/lookup",
        Some("Tokens/LookupToken"),
        Lookup,
        "auth/token/lookup",
        r#"{"token": "vt.unknown"}"#
    ),
    route!(
        WRITE,
        "auth/token/lookup-accessor",
        Some("Tokens/LookupToken"),
        LookupAccessor,
        "auth/token/lookup-accessor",
        r#"{"accessor": "va.unknown"}"#
    ),
    route!(
        WRITE,
        "auth/token/revoke",
        Some("Tokens/RevokeToken"),
        Revoke,
        "auth/token/revoke",
        r#"{"token": "vt.unknown"}"#
    ),
    route!(
        WRITE,
        "auth/token/revoke-accessor",
        Some("Tokens/RevokeToken"),
        RevokeAccessor,
        "auth/token/revoke-accessor",
        r#"{"accessor": "va.unknown"}"#
    ),
    route!(
        WRITE,
        "auth/approle/login",
        Some("Login/LoginAppRole"),
        AppRoleLogin,
        "auth/approle/login",
        r#"{"role_id": "x", "secret_id": "y"}"#
    ),
    route!(
        WRITE,
        "auth/jwt/login",
        Some("Login/LoginJwt"),
        JwtLogin,
        "auth/jwt/login",
        r#"{"role": "x", "jwt": "y"}"#
    ),
    route!(
        WRITE,
        "auth/oidc/login",
        Some("Login/LoginJwt"),
        JwtLogin,
        "auth/oidc/login",
        r#"{"role": "x", "jwt": "y"}"#
    ),
];

/// What a pattern captured (`:name`, `*path`).
#[derive(Default, Debug)]
pub(crate) struct Matched {
    captures: Vec<(&'static str, String)>,
}

impl Matched {
    pub fn get(&self, name: &str) -> &str {
        self.captures
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// The verb a request is routed by: Vault's `LIST`, also spelled `GET ...?list=true`.
fn verb(method: &Method, query: Option<&str>) -> String {
    let listed = query
        .unwrap_or_default()
        .split('&')
        .any(|pair| pair == "list=true" || pair == "list=1");
    if *method == Method::GET && listed {
        "LIST".to_owned()
    } else {
        method.as_str().to_owned()
    }
}

/// The route of a request, and what its pattern captured.
pub(crate) fn find(
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Option<(&'static Route, Matched)> {
    let verb = verb(method, query);
    ROUTES
        .iter()
        .filter(|route| route.methods.contains(&verb.as_str()))
        .find_map(|route| matches(route.pattern, path).map(|m| (route, m)))
}

/// What a path's unknown route or method gets: 405 naming the methods if the path is served,
/// else 404 naming the path and what is served.
pub(crate) fn not_routed(method: &Method, path: &str) -> Failure {
    let mut allowed: Vec<&str> = ROUTES
        .iter()
        .filter(|route| matches(route.pattern, path).is_some())
        .flat_map(|route| route.methods.iter().copied())
        .collect();
    allowed.dedup();
    if allowed.is_empty() {
        Failure::new(
            StatusCode::NOT_FOUND,
            format!(
                "no handler for route {path:?}: this vault serves sys/ (health, seal-status, \
                 init, unseal, seal, leader, mounts, rotate), secret/ (KV v2), transit/, \
                 auth/token/, auth/approle/login and auth/jwt/login"
            ),
        )
    } else {
        Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "method {method} is not served on {path:?}; it takes {}",
                allowed.join(", ")
            ),
        )
    }
}

fn matches(pattern: &'static str, path: &str) -> Option<Matched> {
    let mut matched = Matched::default();
    let mut rest = path;
    let mut parts = pattern.split('/').peekable();
    while let Some(part) = parts.next() {
        if let Some(name) = part.strip_prefix('*') {
            let (name, optional) = match name.strip_suffix('?') {
                Some(name) => (name, true),
                None => (name, false),
            };
            if rest.is_empty() && !optional {
                return None;
            }
            matched.captures.push((name, rest.to_owned()));
            return Some(matched);
        }
        let (segment, after) = match rest.split_once('/') {
            Some((segment, after)) => (segment, Some(after)),
            None => (rest, None),
        };
        if let Some(name) = part.strip_prefix(':') {
            if segment.is_empty() {
                return None;
            }
            matched.captures.push((name, segment.to_owned()));
        } else if segment != part {
            return None;
        }
        match (after, parts.peek()) {
            (None, None) => return Some(matched),
            // A trailing slash on a fixed path is the same path.
            (Some(""), None) => return Some(matched),
            (Some(after), Some(_)) => rest = after,
            // `secret/metadata` before an optional rest.
            (None, Some(next)) if next.ends_with('?') => {
                rest = "";
            }
            _ => return None,
        }
    }
    None
}

/// Serves a routed request.
///
/// `sys/health` is served before this (`super::handle`): it is neither admitted nor audited.
pub(crate) async fn dispatch(
    gateway: &Gateway,
    incoming: &Incoming,
    route: &'static Route,
    matched: &Matched,
) -> Result<Answer, Failure> {
    use Endpoint as E;
    match route.endpoint {
        // Served before routing reaches here (`super::handle`).
        E::Health => Err(Failure::internal()),
        E::SealStatus => sys::seal_status(gateway, incoming).await,
        E::InitStatus => sys::init_status(gateway, incoming).await,
        E::Init => sys::init(gateway, incoming).await,
        E::Unseal => sys::unseal(gateway, incoming).await,
        E::Seal => sys::seal(gateway, incoming).await,
        E::Leader => sys::leader(gateway, incoming).await,
        E::Mounts => sys::mounts(gateway, incoming).await,
        E::UiMount => sys::ui_mount(gateway, incoming, matched.get("path")).await,
        E::Rotate => sys::rotate(gateway, incoming).await,
        E::KvRead => kv::read(gateway, incoming, matched.get("path")).await,
        E::KvWrite => kv::write(gateway, incoming, matched.get("path")).await,
        E::KvPatch => kv::patch(gateway, incoming, matched.get("path")).await,
        E::KvDeleteLatest => kv::delete_latest(gateway, incoming, matched.get("path")).await,
        E::KvReadMetadata => kv::read_metadata(gateway, incoming, matched.get("path")).await,
        E::KvList => kv::list(gateway, incoming, matched.get("path")).await,
        E::KvWriteMetadata => kv::write_metadata(gateway, incoming, matched.get("path")).await,
        E::KvDeleteMetadata => kv::delete_metadata(gateway, incoming, matched.get("path")).await,
        E::KvDelete => {
            kv::versions(gateway, incoming, matched.get("path"), kv::Change::Delete).await
        }
        E::KvUndelete => {
            kv::versions(gateway, incoming, matched.get("path"), kv::Change::Undelete).await
        }
        E::KvDestroy => {
            kv::versions(gateway, incoming, matched.get("path"), kv::Change::Destroy).await
        }
        E::KeyCreate => transit::create(gateway, incoming, matched.get("name")).await,
        E::KeyRead => transit::read(gateway, incoming, matched.get("name")).await,
        E::KeyList => transit::list(gateway, incoming).await,
        E::KeyDelete => transit::delete(gateway, incoming, matched.get("name")).await,
        E::KeyConfig => transit::config(gateway, incoming, matched.get("name")).await,
        E::KeyRotate => transit::rotate(gateway, incoming, matched.get("name")).await,
        E::KeyTrim => transit::trim(gateway, incoming, matched.get("name")).await,
        E::Encrypt => transit::encrypt(gateway, incoming, matched.get("name")).await,
        E::Decrypt => transit::decrypt(gateway, incoming, matched.get("name")).await,
        E::Rewrap => transit::rewrap(gateway, incoming, matched.get("name")).await,
        E::DataKey => {
            transit::datakey(gateway, incoming, matched.get("kind"), matched.get("name")).await
        }
        E::Sign => {
            let (name, algorithm) = (matched.get("name"), matched.get("algorithm"));
            transit::tag(gateway, incoming, name, algorithm, transit::Tag::Signature).await
        }
        E::Verify => {
            transit::verify(
                gateway,
                incoming,
                matched.get("name"),
                matched.get("algorithm"),
            )
            .await
        }
        E::Hmac => {
            let (name, algorithm) = (matched.get("name"), matched.get("algorithm"));
            transit::tag(gateway, incoming, name, algorithm, transit::Tag::Hmac).await
        }
        E::LookupSelf => token::lookup(gateway, incoming, token::Which::Own).await,
        E::Lookup => token::lookup(gateway, incoming, token::Which::ByToken).await,
        E::LookupAccessor => token::lookup(gateway, incoming, token::Which::ByAccessor).await,
        E::RenewSelf => token::renew_self(gateway, incoming).await,
        E::RevokeSelf => token::revoke(gateway, incoming, token::Which::Own).await,
        E::Revoke => token::revoke(gateway, incoming, token::Which::ByToken).await,
        E::RevokeAccessor => token::revoke(gateway, incoming, token::Which::ByAccessor).await,
        E::CreateToken => token::create(gateway, incoming).await,
        E::AppRoleLogin => token::approle_login(gateway, incoming).await,
        E::JwtLogin => token::jwt_login(gateway, incoming).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_names_a_method_of_the_rpc_table_and_its_example_reaches_it() {
        for route in ROUTES {
            if let Some(rpc) = route.rpc {
                assert!(
                    crate::rpcs::of_path(&format!("/vault.v1.{rpc}")).is_some(),
                    "{}: {rpc} is not in the RPC table",
                    route.pattern
                );
            }
            for method in route.methods {
                let method = if *method == "LIST" {
                    Method::GET
                } else {
                    Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET)
                };
                let query = (route.methods.contains(&"LIST")).then_some("list=true");
                let found = find(&method, route.example, query).map(|(r, _)| r.endpoint);
                assert_eq!(found, Some(route.endpoint), "{} {}", method, route.example);
            }
        }
    }

    #[test]
    fn patterns_capture_names_and_rests() {
        let (route, m) = find(&Method::GET, "secret/data/a/b/c", None).expect("routed");
        assert_eq!(route.endpoint, Endpoint::KvRead);
        assert_eq!(m.get("path"), "a/b/c");
        let (route, m) = find(&Method::GET, "secret/metadata", Some("list=true")).expect("routed");
        assert_eq!(route.endpoint, Endpoint::KvList);
        assert_eq!(m.get("path"), "");
        let (route, m) = find(&Method::POST, "transit/sign/k/sha2-256", None).expect("routed");
        assert_eq!(route.endpoint, Endpoint::Sign);
        assert_eq!((m.get("name"), m.get("algorithm")), ("k", "sha2-256"));
        let (_, m) = find(&Method::POST, "transit/sign/k", None).expect("routed");
        assert_eq!(m.get("algorithm"), "");
        assert!(find(&Method::GET, "secret/data/", None).is_none());
        assert!(find(&Method::GET, "nothing/here", None).is_none());
        assert_eq!(
            not_routed(&Method::DELETE, "sys/health").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            not_routed(&Method::GET, "pki/issue/x").status(),
            StatusCode::NOT_FOUND
        );
    }
}
