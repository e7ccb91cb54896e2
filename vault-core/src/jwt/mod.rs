//! Verifying identity-provider JWTs (compact JWS, RFC 7515/7519) against a JWKS (RFC 7517).
//!
//! Invariant: a token is accepted only if its header names one of the asymmetric algorithms of
//! [`Algorithm`], a key from the configured JWKS of the matching type verifies its signature, and
//! its `exp`, `nbf`, `iat`, `iss`, `aud` and `sub` claims pass. Keys are never taken from the
//! token (`jwk`, `jku`, `x5u` and `x5c` are ignored), `none` and HMAC algorithms are refused before
//! any key is looked at, and no error message contains the token, its signature or its raw
//! payload, because the messages go into audit records.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

/// Longest token accepted before any work is done on it.
pub const MAX_JWT_BYTES: usize = 16 * 1024;

/// Smallest RSA modulus accepted in a JWKS, in bytes (2048 bits, ring's floor for verification).
const MIN_RSA_MODULUS_BYTES: usize = 256;
/// Largest RSA modulus accepted in a JWKS, in bytes (8192 bits, ring's ceiling).
const MAX_RSA_MODULUS_BYTES: usize = 1024;
/// Longest untrusted string (issuer, audience, kid, alg) that is quoted into an error message.
const MAX_QUOTED_CHARS: usize = 64;
/// JWK members that hold private or symmetric key material; a JWKS for verification has none.
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

/// Why a JWKS was refused or a token was not accepted. Messages are lower case, name the failed
/// check, and never contain the token, its signature or its raw payload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The JWKS document is unusable; the message names the key (index and kid) and field.
    #[error("invalid jwks: {0}")]
    InvalidJwks(String),
    /// The token is longer than [`MAX_JWT_BYTES`].
    #[error("jwt is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// The token is not a compact JWS with a JSON header and payload; says which part is wrong.
    #[error("malformed jwt: {0}")]
    Malformed(&'static str),
    /// The header names an algorithm outside the accepted list (including `none` and HMAC).
    #[error("jwt algorithm {0} is not accepted")]
    AlgorithmNotAccepted(String),
    /// The header `typ` is neither `JWT` nor `at+jwt`.
    #[error("jwt type {0} is not accepted")]
    TypeNotAccepted(String),
    /// The header has a `crit` member; no extension is understood, so none can be honoured.
    #[error("jwt header has crit extensions, which are not supported")]
    CriticalExtension,
    /// The header `kid` names no key of the JWKS.
    #[error("no key in the jwks has kid {0}")]
    UnknownKey(String),
    /// The key named by the header `kid` does not fit the header algorithm (type, curve or its
    /// own `alg` member).
    #[error("the jwks key with kid {kid} does not fit jwt algorithm {algorithm}")]
    KeyMismatch {
        kid: String,
        algorithm: &'static str,
    },
    /// The header has no `kid` and no key of the JWKS fits its algorithm.
    #[error("no key in the jwks fits jwt algorithm {0}")]
    NoKeyForAlgorithm(&'static str),
    /// No candidate key verifies the signature (tampered token, or signed by another key).
    #[error("jwt signature does not verify")]
    BadSignature,
    /// A required claim is absent.
    #[error("jwt claim {0} is missing")]
    MissingClaim(&'static str),
    /// A claim has the wrong type or an impossible value; `reason` says which.
    #[error("jwt claim {claim} {reason}")]
    InvalidClaim {
        claim: &'static str,
        reason: &'static str,
    },
    /// `now` is not before `exp` plus the leeway; holds the time of `exp`.
    #[error("jwt expired at {0}")]
    Expired(String),
    /// `now` plus the leeway is before `nbf`; holds the time of `nbf`.
    #[error("jwt is not valid before {0}")]
    NotYetValid(String),
    /// `iat` is more than the leeway in the future; holds the time of `iat`.
    #[error("jwt was issued in the future, at {0}")]
    IssuedInFuture(String),
    /// `iss` differs from the expected issuer; holds the presented issuer.
    #[error("jwt issuer {0} is not the accepted issuer")]
    WrongIssuer(String),
    /// `aud` names none of the accepted audiences; holds the presented audiences.
    #[error("jwt audience [{0}] is not among the accepted audiences")]
    WrongAudience(String),
}

/// A signature algorithm this module accepts. Anything else is refused by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Algorithm {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

impl Algorithm {
    const ALL: [Algorithm; 9] = [
        Algorithm::Rs256,
        Algorithm::Rs384,
        Algorithm::Rs512,
        Algorithm::Ps256,
        Algorithm::Ps384,
        Algorithm::Ps512,
        Algorithm::Es256,
        Algorithm::Es384,
        Algorithm::EdDsa,
    ];

    /// The algorithm with exactly this JOSE name (names are case-sensitive, RFC 7515 §4.1.1).
    fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|alg| alg.name() == name)
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Rs384 => "RS384",
            Algorithm::Rs512 => "RS512",
            Algorithm::Ps256 => "PS256",
            Algorithm::Ps384 => "PS384",
            Algorithm::Ps512 => "PS512",
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    fn rsa_parameters(self) -> Option<&'static signature::RsaParameters> {
        Some(match self {
            Algorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Algorithm::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Algorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            Algorithm::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
            Algorithm::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
            Algorithm::Es256 | Algorithm::Es384 | Algorithm::EdDsa => return None,
        })
    }
}

/// The public part of one verification key.
enum KeyMaterial {
    /// Modulus and exponent, big-endian without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Uncompressed point 0x04 || x || y on P-256.
    P256(Vec<u8>),
    /// Uncompressed point 0x04 || x || y on P-384.
    P384(Vec<u8>),
    /// The 32-byte Ed25519 public key.
    Ed25519(Vec<u8>),
}

impl KeyMaterial {
    fn describe(&self) -> &'static str {
        match self {
            KeyMaterial::Rsa { .. } => "RSA",
            KeyMaterial::P256(_) => "EC P-256",
            KeyMaterial::P384(_) => "EC P-384",
            KeyMaterial::Ed25519(_) => "OKP Ed25519",
        }
    }

    /// Whether this kind of key can verify `algorithm` at all.
    fn fits(&self, algorithm: Algorithm) -> bool {
        match self {
            KeyMaterial::Rsa { .. } => algorithm.rsa_parameters().is_some(),
            KeyMaterial::P256(_) => algorithm == Algorithm::Es256,
            KeyMaterial::P384(_) => algorithm == Algorithm::Es384,
            KeyMaterial::Ed25519(_) => algorithm == Algorithm::EdDsa,
        }
    }

    fn verifies(&self, algorithm: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        let result = match (self, algorithm.rsa_parameters()) {
            (KeyMaterial::Rsa { n, e }, Some(parameters)) => {
                RsaPublicKeyComponents { n, e }.verify(parameters, message, signature)
            }
            (KeyMaterial::P256(point), None) if algorithm == Algorithm::Es256 => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
            }
            (KeyMaterial::P384(point), None) if algorithm == Algorithm::Es384 => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                    .verify(message, signature)
            }
            (KeyMaterial::Ed25519(key), None) if algorithm == Algorithm::EdDsa => {
                UnparsedPublicKey::new(&signature::ED25519, key).verify(message, signature)
            }
            _ => return false,
        };
        result.is_ok()
    }
}

/// One usable verification key of a JWKS.
struct Jwk {
    kid: Option<String>,
    /// The key's own `alg` member: if present, the only algorithm it may verify.
    alg: Option<String>,
    material: KeyMaterial,
}

impl Jwk {
    /// Whether this key may verify a token of `algorithm`: its type and curve fit, and its own
    /// `alg`, if any, names the same algorithm. This is what stops algorithm confusion.
    fn fits(&self, algorithm: Algorithm) -> bool {
        self.material.fits(algorithm)
            && self
                .alg
                .as_deref()
                .is_none_or(|alg| alg == algorithm.name())
    }
}

/// Verification keys parsed from a JWKS document (RFC 7517). No private key material is kept.
pub struct Jwks {
    keys: Vec<Jwk>,
}

impl std::fmt::Debug for Jwks {
    /// Lists each key's kid, alg and type; public keys, so printing them reveals nothing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for key in &self.keys {
            list.entry(&format_args!(
                "{{kid: {:?}, alg: {:?}, type: {}}}",
                key.kid,
                key.alg,
                key.material.describe()
            ));
        }
        list.finish()
    }
}

impl Jwks {
    /// Parses a JWKS document: a JSON object whose `keys` member is an array of JWKs.
    ///
    /// Errors name the offending key (index / kid) and field. Keys with `use` other than "sig",
    /// or `key_ops` without "verify", are skipped; unsupported kty/crv are skipped (not an error)
    /// unless no usable key remains -> error. A key carrying private or symmetric material
    /// (`d`, `k`, ...) of a supported type is an error: such a document was pasted by mistake.
    pub fn parse(json: &[u8]) -> Result<Jwks, JwtError> {
        let document: Value = serde_json::from_slice(json)
            .map_err(|_| JwtError::InvalidJwks("the document is not valid json".into()))?;
        let entries = document
            .as_object()
            .ok_or_else(|| JwtError::InvalidJwks("the document is not a json object".into()))?
            .get("keys")
            .ok_or_else(|| JwtError::InvalidJwks("field keys is missing".into()))?
            .as_array()
            .ok_or_else(|| JwtError::InvalidJwks("field keys is not an array".into()))?;
        let mut keys = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            if let Some(key) = parse_jwk(index, entry)? {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(JwtError::InvalidJwks(format!(
                "none of its {} keys is a usable signature verification key (supported: RSA, EC \
                 P-256, EC P-384, OKP Ed25519)",
                entries.len()
            )));
        }
        Ok(Jwks { keys })
    }

    /// Number of usable keys (skipped keys are not counted).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Parses the JWK at `index`; `Ok(None)` if it is well-formed but not for this module's use.
fn parse_jwk(index: usize, entry: &Value) -> Result<Option<Jwk>, JwtError> {
    let Some(object) = entry.as_object() else {
        return Err(JwtError::InvalidJwks(format!(
            "key {index} is not a json object"
        )));
    };
    // The kid is read first so that every later error can name it.
    let kid = optional_string(object, "kid")
        .map_err(|()| JwtError::InvalidJwks(format!("key {index}: field kid is not a string")))?;
    let at = match &kid {
        Some(kid) => format!("key {index} (kid {})", quote(kid)),
        None => format!("key {index}"),
    };
    let invalid = |what: String| JwtError::InvalidJwks(format!("{at}: {what}"));
    let text = |name: &'static str| {
        optional_string(object, name).map_err(|()| invalid(format!("field {name} is not a string")))
    };

    let kty = text("kty")?.ok_or_else(|| invalid("field kty is missing".into()))?;
    let alg = text("alg")?;
    if let Some(key_use) = text("use")?
        && key_use != "sig"
    {
        return Ok(None);
    }
    if let Some(operations) = object.get("key_ops") {
        let operations = operations
            .as_array()
            .filter(|list| list.iter().all(Value::is_string))
            .ok_or_else(|| invalid("field key_ops is not an array of strings".into()))?;
        if !operations.iter().any(|operation| operation == "verify") {
            return Ok(None);
        }
    }
    let curve = || text("crv")?.ok_or_else(|| invalid("field crv is missing".into()));
    let material = match kty.as_str() {
        "RSA" => {
            let mut n = base64_member(object, "n", &invalid)?;
            let e = base64_member(object, "e", &invalid)?;
            // RFC 7518 asks for no leading zeros; some providers add one anyway. Harmless.
            let leading_zeros = n.iter().take_while(|byte| **byte == 0).count();
            n.drain(..leading_zeros);
            if !(MIN_RSA_MODULUS_BYTES..=MAX_RSA_MODULUS_BYTES).contains(&n.len()) {
                return Err(invalid(format!(
                    "field n is a {}-bit modulus, outside 2048..=8192 bits",
                    n.len() * 8
                )));
            }
            if e.is_empty() || e.len() > 8 {
                return Err(invalid("field e is not a usable public exponent".into()));
            }
            KeyMaterial::Rsa { n, e }
        }
        "EC" => match curve()?.as_str() {
            "P-256" => KeyMaterial::P256(ec_point(object, 32, &invalid)?),
            "P-384" => KeyMaterial::P384(ec_point(object, 48, &invalid)?),
            _ => return Ok(None),
        },
        "OKP" => match curve()?.as_str() {
            "Ed25519" => {
                let x = base64_member(object, "x", &invalid)?;
                if x.len() != 32 {
                    return Err(invalid(format!("field x is {} bytes, not 32", x.len())));
                }
                KeyMaterial::Ed25519(x)
            }
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    if let Some(member) = PRIVATE_MEMBERS
        .iter()
        .find(|member| object.contains_key(**member))
    {
        return Err(invalid(format!(
            "field {member} is private key material; publish public keys only"
        )));
    }
    Ok(Some(Jwk { kid, alg, material }))
}

/// The string member `name`, `Ok(None)` if absent, `Err(())` if present but not a string.
fn optional_string(object: &Map<String, Value>, name: &str) -> Result<Option<String>, ()> {
    match object.get(name) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(()),
    }
}

/// The required base64url (unpadded) member `name`, decoded.
fn base64_member(
    object: &Map<String, Value>,
    name: &'static str,
    invalid: &dyn Fn(String) -> JwtError,
) -> Result<Vec<u8>, JwtError> {
    let text = optional_string(object, name)
        .map_err(|()| invalid(format!("field {name} is not a string")))?
        .ok_or_else(|| invalid(format!("field {name} is missing")))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| invalid(format!("field {name} is not unpadded base64url")))
}

/// The uncompressed point 0x04 || x || y from the members `x` and `y` of `size` bytes each.
fn ec_point(
    object: &Map<String, Value>,
    size: usize,
    invalid: &dyn Fn(String) -> JwtError,
) -> Result<Vec<u8>, JwtError> {
    let mut point = Vec::with_capacity(1 + 2 * size);
    point.push(0x04);
    for name in ["x", "y"] {
        let coordinate = base64_member(object, name, invalid)?;
        if coordinate.len() != size {
            return Err(invalid(format!(
                "field {name} is {} bytes, not {size}",
                coordinate.len()
            )));
        }
        point.extend_from_slice(&coordinate);
    }
    Ok(point)
}

/// What a token must satisfy besides its signature.
#[derive(Clone, Copy, Debug)]
pub struct Expectations<'a> {
    /// Must equal `iss` exactly.
    pub issuer: &'a str,
    /// `aud` (string or array) must contain at least one of these.
    pub audiences: &'a [String],
    /// The current time, in seconds since the Unix epoch.
    pub now_unix: i64,
    /// Clock skew allowed for `exp`, `nbf` and `iat`, in seconds (negative counts as 0).
    pub leeway_seconds: i64,
}

/// The claims of a verified token. No Debug: claims can carry personal data.
pub struct Claims {
    claims: Map<String, Value>,
    expires_unix: i64,
}

impl Claims {
    /// The claim `name` if it is a string.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A string claim or an array of strings, as a list (other types, or an array holding
    /// anything but strings: empty).
    pub fn strings(&self, name: &str) -> Vec<&str> {
        match self.claims.get(name) {
            Some(Value::String(text)) => vec![text.as_str()],
            Some(Value::Array(items)) => items
                .iter()
                .map(Value::as_str)
                .collect::<Option<Vec<&str>>>()
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// `sub`: present and non-empty, [`verify`] checked it.
    pub fn subject(&self) -> &str {
        self.string("sub").unwrap_or_default()
    }

    /// `exp` in seconds since the Unix epoch (rounded down), required by [`verify`].
    pub fn expires_unix(&self) -> i64 {
        self.expires_unix
    }
}

/// Verifies a compact JWS `jwt` against `jwks` and checks its claims against `expect`.
///
/// The order is fixed so that nothing attacker-chosen is used before it is safe: size, shape,
/// header and its algorithm (refused before any key is looked at), key selection, signature,
/// and only then the claims.
pub fn verify(jwt: &str, jwks: &Jwks, expect: &Expectations<'_>) -> Result<Claims, JwtError> {
    if jwt.len() > MAX_JWT_BYTES {
        return Err(JwtError::TooLarge {
            size: jwt.len(),
            limit: MAX_JWT_BYTES,
        });
    }
    let mut parts = jwt.split('.');
    let (Some(header_part), Some(payload_part), Some(signature_part), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(
            "a compact jwt has exactly three dot-separated parts",
        ));
    };

    let header = decode_part(header_part, "header is not unpadded base64url")?;
    let header: Map<String, Value> = serde_json::from_slice(&header)
        .map_err(|_| JwtError::Malformed("header is not a json object"))?;
    let algorithm = match header.get("alg") {
        None => return Err(JwtError::Malformed("header alg is missing")),
        Some(Value::String(name)) => {
            Algorithm::from_name(name).ok_or_else(|| JwtError::AlgorithmNotAccepted(quote(name)))?
        }
        Some(_) => return Err(JwtError::Malformed("header alg is not a string")),
    };
    if header.contains_key("crit") {
        return Err(JwtError::CriticalExtension);
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(typ)) if is_accepted_type(typ) => {}
        Some(Value::String(typ)) => return Err(JwtError::TypeNotAccepted(quote(typ))),
        Some(_) => return Err(JwtError::Malformed("header typ is not a string")),
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(JwtError::Malformed("header kid is not a string")),
    };

    // Both are decoded before the signature check so that a malformed token says so.
    let payload = decode_part(payload_part, "payload is not unpadded base64url")?;
    let signature = decode_part(signature_part, "signature is not unpadded base64url")?;

    let candidates: Vec<&Jwk> = match kid {
        Some(kid) => {
            let named: Vec<&Jwk> = jwks
                .keys
                .iter()
                .filter(|key| key.kid.as_deref() == Some(kid))
                .collect();
            if named.is_empty() {
                return Err(JwtError::UnknownKey(quote(kid)));
            }
            let fitting: Vec<&Jwk> = named
                .into_iter()
                .filter(|key| key.fits(algorithm))
                .collect();
            if fitting.is_empty() {
                return Err(JwtError::KeyMismatch {
                    kid: quote(kid),
                    algorithm: algorithm.name(),
                });
            }
            fitting
        }
        None => {
            let fitting: Vec<&Jwk> = jwks.keys.iter().filter(|key| key.fits(algorithm)).collect();
            if fitting.is_empty() {
                return Err(JwtError::NoKeyForAlgorithm(algorithm.name()));
            }
            fitting
        }
    };
    // The signing input is the first two parts exactly as sent, dot included.
    let signing_input = &jwt.as_bytes()[..header_part.len() + 1 + payload_part.len()];
    if !candidates
        .iter()
        .any(|key| key.material.verifies(algorithm, signing_input, &signature))
    {
        return Err(JwtError::BadSignature);
    }

    let claims: Map<String, Value> = serde_json::from_slice(&payload)
        .map_err(|_| JwtError::Malformed("payload is not a json object"))?;
    check_claims(claims, expect)
}

/// `typ` values meaning a JWT (RFC 7519 §5.1) or an OAuth access token (RFC 9068 §2.1); media
/// types compare case-insensitively and may carry the `application/` prefix.
fn is_accepted_type(typ: &str) -> bool {
    let typ = typ.to_ascii_lowercase();
    let typ = typ.strip_prefix("application/").unwrap_or(&typ);
    typ == "jwt" || typ == "at+jwt"
}

/// Decodes one part strictly: base64url alphabet, no padding, no stray bits.
fn decode_part(part: &str, reason: &'static str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed(reason))
}

fn check_claims(claims: Map<String, Value>, expect: &Expectations<'_>) -> Result<Claims, JwtError> {
    let now = expect.now_unix;
    let leeway = expect.leeway_seconds.max(0);

    let expires = time_claim(&claims, "exp")?.ok_or(JwtError::MissingClaim("exp"))?;
    if now >= expires.saturating_add(leeway) {
        return Err(JwtError::Expired(display_time(expires)));
    }
    if let Some(not_before) = time_claim(&claims, "nbf")?
        && now.saturating_add(leeway) < not_before
    {
        return Err(JwtError::NotYetValid(display_time(not_before)));
    }
    if let Some(issued) = time_claim(&claims, "iat")?
        && issued > now.saturating_add(leeway)
    {
        return Err(JwtError::IssuedInFuture(display_time(issued)));
    }

    match claims.get("iss") {
        None => return Err(JwtError::MissingClaim("iss")),
        Some(Value::String(issuer)) if issuer == expect.issuer => {}
        Some(Value::String(issuer)) => return Err(JwtError::WrongIssuer(quote(issuer))),
        Some(_) => return Err(invalid_claim("iss", "is not a string")),
    }

    let audiences: Vec<&str> = match claims.get("aud") {
        None => return Err(JwtError::MissingClaim("aud")),
        Some(Value::String(audience)) => vec![audience.as_str()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<&str>>>()
            .ok_or_else(|| invalid_claim("aud", "is not a string or an array of strings"))?,
        Some(_) => {
            return Err(invalid_claim(
                "aud",
                "is not a string or a non-empty array of strings",
            ));
        }
    };
    if !audiences
        .iter()
        .any(|audience| expect.audiences.iter().any(|accepted| accepted == audience))
    {
        let listed: Vec<String> = audiences.iter().map(|audience| quote(audience)).collect();
        return Err(JwtError::WrongAudience(listed.join(", ")));
    }

    match claims.get("sub") {
        None => return Err(JwtError::MissingClaim("sub")),
        Some(Value::String(subject)) if !subject.is_empty() => {}
        Some(Value::String(_)) => return Err(invalid_claim("sub", "is empty")),
        Some(_) => return Err(invalid_claim("sub", "is not a string")),
    }

    Ok(Claims {
        claims,
        expires_unix: expires,
    })
}

fn invalid_claim(claim: &'static str, reason: &'static str) -> JwtError {
    JwtError::InvalidClaim { claim, reason }
}

/// A NumericDate claim in whole seconds (fractions rounded down); `Ok(None)` if absent.
fn time_claim(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, JwtError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let Value::Number(number) = value else {
        return Err(invalid_claim(name, "is not a number"));
    };
    if let Some(whole) = number.as_i64() {
        return Ok(Some(whole));
    }
    // i64::MAX as f64 rounds up to 2^63, which is itself out of range, hence `<`.
    match number.as_f64().map(f64::floor) {
        Some(seconds) if seconds >= i64::MIN as f64 && seconds < i64::MAX as f64 => {
            Ok(Some(seconds as i64))
        }
        _ => Err(invalid_claim(name, "is out of range")),
    }
}

/// A claim time for an error message: RFC 3339 when representable, Unix seconds otherwise.
fn display_time(unix_seconds: i64) -> String {
    match unix_seconds.checked_mul(1_000_000_000) {
        Some(nanos) => crate::time::rfc3339(nanos).replace(".000000000Z", "Z"),
        None => format!("unix time {unix_seconds}"),
    }
}

/// An untrusted string (alg, typ, kid, issuer, audience) made safe for an audit record: shown
/// as-is if short and plain, otherwise truncated and escaped in quotes.
fn quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text.len() <= MAX_QUOTED_CHARS
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:/+@".contains(&byte));
    if plain {
        return text.to_owned();
    }
    let mut shown: String = text.chars().take(MAX_QUOTED_CHARS).collect();
    if shown.len() < text.len() {
        shown.push_str("...");
    }
    format!("{shown:?}")
}

#[cfg(test)]
mod tests;
