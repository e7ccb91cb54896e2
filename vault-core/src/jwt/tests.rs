//! Tokens are signed here with ring: ECDSA and Ed25519 keys are generated per run, the RSA key
//! is a fixed test-only key (ring cannot generate RSA keys).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    hmac,
    rand::SystemRandom,
    rsa::PublicKeyComponents,
    signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair},
};
use serde_json::{Value, json};

use super::*;

const RSA_PKCS8: &[u8] = include_bytes!("../../../tests/fixtures/jwt-test-rsa-2048.pk8");
const NOW: i64 = 1_800_000_000;
const ISSUER: &str = "https://idp.example.com";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The key pairs behind the test JWKS, and the JWKS itself.
struct Keys {
    rsa: RsaKeyPair,
    p256: EcdsaKeyPair,
    p384: EcdsaKeyPair,
    ed25519: Ed25519KeyPair,
    jwks_json: Vec<u8>,
    jwks: Jwks,
}

fn rsa_jwk(rsa: &RsaKeyPair, kid: &str, alg: Option<&str>) -> Value {
    let public = PublicKeyComponents::<Vec<u8>>::from(rsa.public());
    let mut jwk =
        json!({"kty": "RSA", "use": "sig", "kid": kid, "n": b64(&public.n), "e": b64(&public.e)});
    if let Some(alg) = alg {
        jwk["alg"] = json!(alg);
    }
    jwk
}

fn ec_jwk(key: &EcdsaKeyPair, crv: &str, kid: &str) -> Value {
    let point = key.public_key().as_ref();
    let size = (point.len() - 1) / 2;
    json!({"kty": "EC", "crv": crv, "kid": kid, "x": b64(&point[1..1 + size]), "y": b64(&point[1 + size..])})
}

fn ed_jwk(key: &Ed25519KeyPair, kid: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(key.public_key().as_ref())})
}

fn ecdsa(alg: &'static signature::EcdsaSigningAlgorithm) -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap()
}

fn keys() -> Keys {
    let rsa = RsaKeyPair::from_pkcs8(RSA_PKCS8).unwrap();
    let p256 = ecdsa(&signature::ECDSA_P256_SHA256_FIXED_SIGNING);
    let p384 = ecdsa(&signature::ECDSA_P384_SHA384_FIXED_SIGNING);
    let ed25519 = Ed25519KeyPair::from_pkcs8(
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .unwrap()
            .as_ref(),
    )
    .unwrap();
    let jwks_json = serde_json::to_vec(&json!({"keys": [
        rsa_jwk(&rsa, "rsa-1", None),
        ec_jwk(&p256, "P-256", "ec-1"),
        ec_jwk(&p384, "P-384", "ec-384"),
        ed_jwk(&ed25519, "ed-1"),
    ]}))
    .unwrap();
    let jwks = Jwks::parse(&jwks_json).unwrap();
    Keys {
        rsa,
        p256,
        p384,
        ed25519,
        jwks_json,
        jwks,
    }
}

impl Keys {
    /// Signs `header.payload` with the key pair that fits `alg` (the header's own alg may lie).
    fn sign(&self, alg: &str, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        let rsa = |encoding: &'static dyn signature::RsaEncoding| {
            let mut out = vec![0; self.rsa.public().modulus_len()];
            self.rsa.sign(encoding, &rng, message, &mut out).unwrap();
            out
        };
        match alg {
            "RS256" => rsa(&signature::RSA_PKCS1_SHA256),
            "RS384" => rsa(&signature::RSA_PKCS1_SHA384),
            "RS512" => rsa(&signature::RSA_PKCS1_SHA512),
            "PS256" => rsa(&signature::RSA_PSS_SHA256),
            "PS384" => rsa(&signature::RSA_PSS_SHA384),
            "PS512" => rsa(&signature::RSA_PSS_SHA512),
            "ES256" => self.p256.sign(&rng, message).unwrap().as_ref().to_vec(),
            "ES384" => self.p384.sign(&rng, message).unwrap().as_ref().to_vec(),
            "EdDSA" => self.ed25519.sign(message).as_ref().to_vec(),
            other => panic!("no test signer for {other}"),
        }
    }

    /// A token with `header` and `claims`, signed by the key pair for `signer`.
    fn token(&self, header: &Value, claims: &Value, signer: &str) -> String {
        let input = signing_input(header, claims);
        format!("{input}.{}", b64(&self.sign(signer, input.as_bytes())))
    }

    /// A token signed with `alg` by the key whose kid is the usual one for it.
    fn token_for(&self, alg: &str, claims: &Value) -> String {
        let kid = match alg {
            "ES256" => "ec-1",
            "ES384" => "ec-384",
            "EdDSA" => "ed-1",
            _ => "rsa-1",
        };
        self.token(&json!({"alg": alg, "typ": "JWT", "kid": kid}), claims, alg)
    }

    fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        verify(token, &self.jwks, &expectations(&audiences()))
    }
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(&serde_json::to_vec(header).unwrap()),
        b64(&serde_json::to_vec(claims).unwrap())
    )
}

fn audiences() -> Vec<String> {
    vec!["vault".into(), "vault-admin".into()]
}

fn expectations(audiences: &[String]) -> Expectations<'_> {
    Expectations {
        issuer: ISSUER,
        audiences,
        now_unix: NOW,
        leeway_seconds: 60,
    }
}

fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": "vault",
        "sub": "user-1",
        "exp": NOW + 300,
        "nbf": NOW - 10,
        "iat": NOW - 10,
        "email": "user@example.com",
        "groups": ["ops", "dev"],
    })
}

fn claims_with(name: &str, value: Value) -> Value {
    let mut claims = claims();
    if value.is_null() {
        claims.as_object_mut().unwrap().remove(name);
    } else {
        claims[name] = value;
    }
    claims
}

/// The error's message, after checking that it leaks no part of the token.
fn refused(keys: &Keys, token: &str) -> String {
    let error = match keys.verify(token) {
        Ok(_) => panic!("token was accepted"),
        Err(error) => error,
    };
    let message = error.to_string();
    for part in token.split('.').filter(|part| part.len() > 8) {
        assert!(!message.contains(part), "{message} leaks a token part");
    }
    message
}

#[test]
fn every_accepted_algorithm_verifies() {
    let keys = keys();
    assert_eq!(keys.jwks.len(), 4);
    for alg in [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
    ] {
        let claims = keys
            .verify(&keys.token_for(alg, &claims()))
            .unwrap_or_else(|error| panic!("{alg}: {error}"));
        assert_eq!(claims.subject(), "user-1");
        assert_eq!(claims.expires_unix(), NOW + 300);
        assert_eq!(claims.string("email"), Some("user@example.com"));
        assert_eq!(claims.strings("groups"), ["ops", "dev"]);
    }
}

#[test]
fn keys_are_tried_by_algorithm_when_there_is_no_kid() {
    let keys = keys();
    for alg in ["RS256", "PS512", "ES256", "ES384", "EdDSA"] {
        let token = keys.token(&json!({"alg": alg}), &claims(), alg);
        assert!(keys.verify(&token).is_ok(), "{alg}");
    }
    // Two keys fit ES256 and neither has a kid: the second one signed.
    let other = ecdsa(&signature::ECDSA_P256_SHA256_FIXED_SIGNING);
    let jwks = serde_json::to_vec(&json!({"keys": [
        ec_jwk(&other, "P-256", "x"),
        ec_jwk(&keys.p256, "P-256", "y"),
    ]}))
    .unwrap();
    let mut jwks: Value = serde_json::from_slice(&jwks).unwrap();
    for key in jwks["keys"].as_array_mut().unwrap() {
        key.as_object_mut().unwrap().remove("kid");
    }
    let jwks = Jwks::parse(&serde_json::to_vec(&jwks).unwrap()).unwrap();
    let token = keys.token(&json!({"alg": "ES256"}), &claims(), "ES256");
    assert!(verify(&token, &jwks, &expectations(&audiences())).is_ok());
    // No key at all for EdDSA in that set.
    let token = keys.token(&json!({"alg": "EdDSA"}), &claims(), "EdDSA");
    assert_eq!(
        verify(&token, &jwks, &expectations(&audiences()))
            .err()
            .unwrap()
            .to_string(),
        "no key in the jwks fits jwt algorithm EdDSA"
    );
}

#[test]
fn claim_accessors_return_only_strings() {
    let keys = keys();
    let claims = claims_with("mixed", json!(["a", 1]));
    let claims = keys.verify(&keys.token_for("ES256", &claims)).unwrap();
    assert_eq!(claims.strings("sub"), ["user-1"]);
    assert!(claims.strings("mixed").is_empty());
    assert!(claims.strings("exp").is_empty());
    assert!(claims.strings("absent").is_empty());
    assert_eq!(claims.string("exp"), None);
    assert_eq!(claims.string("groups"), None);
}

#[test]
fn time_claims_are_checked_with_leeway() {
    let keys = keys();
    let check = |name: &str, value: Value| {
        let token = keys.token_for("ES256", &claims_with(name, value));
        keys.verify(&token)
            .map(|_| ())
            .map_err(|error| error.to_string())
    };
    // exp: valid strictly before exp + leeway.
    assert_eq!(check("exp", json!(NOW - 59)), Ok(()));
    assert_eq!(
        check("exp", json!(NOW - 60)),
        Err("jwt expired at 2027-01-15T07:59:00Z".into())
    );
    assert_eq!(
        check("exp", json!(NOW - 3600)),
        Err("jwt expired at 2027-01-15T07:00:00Z".into())
    );
    // Fractions are rounded down.
    assert_eq!(check("exp", json!((NOW - 59) as f64 + 0.9)), Ok(()));
    assert_eq!(
        check("exp", json!((NOW - 60) as f64 + 0.9)),
        Err("jwt expired at 2027-01-15T07:59:00Z".into())
    );
    assert_eq!(
        check("exp", Value::Null),
        Err("jwt claim exp is missing".into())
    );
    assert_eq!(
        check("exp", json!("1800000300")),
        Err("jwt claim exp is not a number".into())
    );
    assert_eq!(
        check("exp", json!(1e300)),
        Err("jwt claim exp is out of range".into())
    );
    assert_eq!(
        check("exp", json!(u64::MAX)),
        Err("jwt claim exp is out of range".into())
    );
    // nbf: valid from nbf - leeway.
    assert_eq!(check("nbf", json!(NOW + 60)), Ok(()));
    assert_eq!(check("nbf", Value::Null), Ok(()));
    assert_eq!(
        check("nbf", json!(NOW + 61)),
        Err("jwt is not valid before 2027-01-15T08:01:01Z".into())
    );
    assert_eq!(
        check("nbf", json!(null)).and(check("nbf", json!(true))),
        Err("jwt claim nbf is not a number".into())
    );
    // iat: at most leeway in the future.
    assert_eq!(check("iat", json!(NOW + 60)), Ok(()));
    assert_eq!(check("iat", Value::Null), Ok(()));
    assert_eq!(
        check("iat", json!(NOW + 86_400)),
        Err("jwt was issued in the future, at 2027-01-16T08:00:00Z".into())
    );
    // A time too far out for RFC 3339 is shown in seconds.
    assert_eq!(
        check("nbf", json!(i64::MAX)),
        Err(format!("jwt is not valid before unix time {}", i64::MAX))
    );
}

#[test]
fn issuer_audience_and_subject_are_checked() {
    let keys = keys();
    let check = |name: &str, value: Value| {
        let token = keys.token_for("EdDSA", &claims_with(name, value));
        keys.verify(&token)
            .map(|_| ())
            .map_err(|error| error.to_string())
    };
    assert_eq!(
        check("iss", json!("https://evil.example.com")),
        Err("jwt issuer https://evil.example.com is not the accepted issuer".into())
    );
    assert_eq!(
        check("iss", json!("https://idp.example.com/")),
        Err("jwt issuer https://idp.example.com/ is not the accepted issuer".into())
    );
    assert_eq!(
        check("iss", Value::Null),
        Err("jwt claim iss is missing".into())
    );
    assert_eq!(
        check("iss", json!(1)),
        Err("jwt claim iss is not a string".into())
    );

    assert_eq!(check("aud", json!("vault-admin")), Ok(()));
    assert_eq!(check("aud", json!(["other", "vault"])), Ok(()));
    assert_eq!(
        check("aud", json!("x")),
        Err("jwt audience [x] is not among the accepted audiences".into())
    );
    assert_eq!(
        check("aud", json!(["x", "two words"])),
        Err("jwt audience [x, \"two words\"] is not among the accepted audiences".into())
    );
    assert_eq!(
        check("aud", Value::Null),
        Err("jwt claim aud is missing".into())
    );
    assert_eq!(
        check("aud", json!([])),
        Err("jwt claim aud is not a string or a non-empty array of strings".into())
    );
    assert_eq!(
        check("aud", json!(["vault", 7])),
        Err("jwt claim aud is not a string or an array of strings".into())
    );

    assert_eq!(
        check("sub", Value::Null),
        Err("jwt claim sub is missing".into())
    );
    assert_eq!(
        check("sub", json!("")),
        Err("jwt claim sub is empty".into())
    );
    assert_eq!(
        check("sub", json!(42)),
        Err("jwt claim sub is not a string".into())
    );
}

#[test]
fn unsigned_and_hmac_tokens_are_refused_by_algorithm() {
    let keys = keys();
    let payload = b64(&serde_json::to_vec(&claims()).unwrap());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(&serde_json::to_vec(&json!({"alg": alg, "typ": "JWT"})).unwrap());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            let message = refused(&keys, &token);
            if token.ends_with('.') {
                assert_eq!(message, format!("jwt algorithm {alg} is not accepted"));
            }
        }
    }
    // Algorithm confusion: HMAC "signed" with the public key, in every form an attacker might
    // guess the verifier uses as a secret. Refused for the algorithm, with or without a kid.
    let public = keys.rsa.public().as_ref().to_vec(); // DER RSAPublicKey
    let spki = spki_from_rsa_public_key(&public);
    let jwk = serde_json::to_vec(&rsa_jwk(&keys.rsa, "rsa-1", None)).unwrap();
    for alg in ["HS256", "HS384", "HS512"] {
        let hmac_alg = match alg {
            "HS256" => hmac::HMAC_SHA256,
            "HS384" => hmac::HMAC_SHA384,
            _ => hmac::HMAC_SHA512,
        };
        for secret in [&public, &spki, &keys.jwks_json, &jwk] {
            for header in [json!({"alg": alg, "kid": "rsa-1"}), json!({"alg": alg})] {
                let input = signing_input(&header, &claims());
                let tag = hmac::sign(&hmac::Key::new(hmac_alg, secret), input.as_bytes());
                let token = format!("{input}.{}", b64(tag.as_ref()));
                assert_eq!(
                    refused(&keys, &token),
                    format!("jwt algorithm {alg} is not accepted")
                );
            }
        }
    }
    for (header, message) in [
        (
            json!({"alg": "RSA-OAEP"}),
            "jwt algorithm RSA-OAEP is not accepted",
        ),
        (
            json!({"alg": "rs256"}),
            "jwt algorithm rs256 is not accepted",
        ),
        (
            json!({"alg": "ES256K"}),
            "jwt algorithm ES256K is not accepted",
        ),
        (
            json!({"alg": "Ed25519"}),
            "jwt algorithm Ed25519 is not accepted",
        ),
        (json!({"alg": ""}), "jwt algorithm \"\" is not accepted"),
        (
            json!({"typ": "JWT"}),
            "malformed jwt: header alg is missing",
        ),
        (
            json!({"alg": 256}),
            "malformed jwt: header alg is not a string",
        ),
    ] {
        let token = keys.token(&header, &claims(), "RS256");
        assert_eq!(refused(&keys, &token), message);
    }
}

/// Wraps a DER RSAPublicKey into a SubjectPublicKeyInfo (rsaEncryption, NULL parameters).
fn spki_from_rsa_public_key(rsa_public_key: &[u8]) -> Vec<u8> {
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 128 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }
    let algorithm = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0];
    bit_string.extend_from_slice(rsa_public_key);
    let mut content = algorithm.to_vec();
    content.extend(der(0x03, &bit_string));
    der(0x30, &content)
}

#[test]
fn keys_must_fit_the_algorithm() {
    let keys = keys();
    // ES256 header naming the RSA key, validly signed by the EC key: refused.
    let token = keys.token(&json!({"alg": "ES256", "kid": "rsa-1"}), &claims(), "ES256");
    assert_eq!(
        refused(&keys, &token),
        "the jwks key with kid rsa-1 does not fit jwt algorithm ES256"
    );
    let token = keys.token(&json!({"alg": "RS256", "kid": "ec-1"}), &claims(), "RS256");
    assert_eq!(
        refused(&keys, &token),
        "the jwks key with kid ec-1 does not fit jwt algorithm RS256"
    );
    let token = keys.token(&json!({"alg": "ES384", "kid": "ec-1"}), &claims(), "ES384");
    assert_eq!(
        refused(&keys, &token),
        "the jwks key with kid ec-1 does not fit jwt algorithm ES384"
    );
    // A JWK pinned to RS512 does not verify RS256, even though the signature is valid.
    let pinned =
        serde_json::to_vec(&json!({"keys": [rsa_jwk(&keys.rsa, "rsa-1", Some("RS512"))]})).unwrap();
    let pinned = Jwks::parse(&pinned).unwrap();
    let audiences = audiences();
    let expect = expectations(&audiences);
    let rs256 = keys.token_for("RS256", &claims());
    assert_eq!(
        verify(&rs256, &pinned, &expect).err().unwrap().to_string(),
        "the jwks key with kid rsa-1 does not fit jwt algorithm RS256"
    );
    let rs256 = keys.token(&json!({"alg": "RS256"}), &claims(), "RS256");
    assert_eq!(
        verify(&rs256, &pinned, &expect).err().unwrap().to_string(),
        "no key in the jwks fits jwt algorithm RS256"
    );
    assert!(verify(&keys.token_for("RS512", &claims()), &pinned, &expect).is_ok());
}

#[test]
fn unknown_kid_is_refused() {
    let keys = keys();
    let token = keys.token(&json!({"alg": "RS256", "kid": "rsa-2"}), &claims(), "RS256");
    assert_eq!(refused(&keys, &token), "no key in the jwks has kid rsa-2");
    let token = keys.token(&json!({"alg": "RS256", "kid": "a\nb"}), &claims(), "RS256");
    assert_eq!(
        refused(&keys, &token),
        "no key in the jwks has kid \"a\\nb\""
    );
    let token = keys.token(&json!({"alg": "RS256", "kid": 1}), &claims(), "RS256");
    assert_eq!(
        refused(&keys, &token),
        "malformed jwt: header kid is not a string"
    );
    // Keys offered by the token itself are never used.
    let other = ecdsa(&signature::ECDSA_P256_SHA256_FIXED_SIGNING);
    let header = json!({"alg": "ES256", "kid": "mine", "jwk": ec_jwk(&other, "P-256", "mine"),
        "jku": "https://evil.example.com/jwks", "x5u": "https://evil.example.com/cert"});
    let input = signing_input(&header, &claims());
    let rng = SystemRandom::new();
    let token = format!(
        "{input}.{}",
        b64(other.sign(&rng, input.as_bytes()).unwrap().as_ref())
    );
    assert_eq!(refused(&keys, &token), "no key in the jwks has kid mine");
}

#[test]
fn tampering_breaks_the_signature() {
    let keys = keys();
    for alg in ["RS256", "PS256", "ES256", "EdDSA"] {
        let token = keys.token_for(alg, &claims());
        let parts: Vec<&str> = token.split('.').collect();
        let forged = b64(&serde_json::to_vec(&claims_with("sub", json!("admin"))).unwrap());
        let tampered = format!("{}.{forged}.{}", parts[0], parts[2]);
        assert_eq!(
            refused(&keys, &tampered),
            "jwt signature does not verify",
            "{alg}"
        );

        let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        signature[10] ^= 1;
        let tampered = format!("{}.{}.{}", parts[0], parts[1], b64(&signature));
        assert_eq!(
            refused(&keys, &tampered),
            "jwt signature does not verify",
            "{alg}"
        );

        let truncated = format!("{}.{}.{}", parts[0], parts[1], b64(&signature[..20]));
        assert_eq!(
            refused(&keys, &truncated),
            "jwt signature does not verify",
            "{alg}"
        );
        let empty = format!("{}.{}.", parts[0], parts[1]);
        assert_eq!(
            refused(&keys, &empty),
            "jwt signature does not verify",
            "{alg}"
        );
    }
    // A signature valid for a different header does not carry over.
    let token = keys.token_for("ES256", &claims());
    let parts: Vec<&str> = token.split('.').collect();
    let header = b64(&serde_json::to_vec(&json!({"alg": "ES256", "kid": "ec-1"})).unwrap());
    let moved = format!("{header}.{}.{}", parts[1], parts[2]);
    assert_eq!(refused(&keys, &moved), "jwt signature does not verify");
}

#[test]
fn malformed_tokens_are_refused() {
    let keys = keys();
    let token = keys.token_for("ES256", &claims());
    let parts: Vec<&str> = token.split('.').collect();
    let three = "malformed jwt: a compact jwt has exactly three dot-separated parts";
    for (text, message) in [
        (String::new(), three),
        (format!("{}.{}", parts[0], parts[1]), three),
        (format!("{token}.{}", parts[2]), three),
        (format!("{token}."), three),
        (
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            "malformed jwt: header is not unpadded base64url",
        ),
        (
            format!(
                "{}.{}.{}",
                parts[0].replace('-', "+").replace('_', "/") + "+/",
                parts[1],
                parts[2]
            ),
            "malformed jwt: header is not unpadded base64url",
        ),
        (
            format!(" {token}"),
            "malformed jwt: header is not unpadded base64url",
        ),
        (
            format!("{}.{}*.{}", parts[0], parts[1], parts[2]),
            "malformed jwt: payload is not unpadded base64url",
        ),
        (
            format!("{}.{}.{}==", parts[0], parts[1], parts[2]),
            "malformed jwt: signature is not unpadded base64url",
        ),
        (
            format!("{}.{}.{}!", parts[0], parts[1], parts[2]),
            "malformed jwt: signature is not unpadded base64url",
        ),
        (
            format!("{}.{}.{}", b64(b"[1]"), parts[1], parts[2]),
            "malformed jwt: header is not a json object",
        ),
        (
            format!("{}.{}.{}", b64(b"{\"alg\":\"ES256\""), parts[1], parts[2]),
            "malformed jwt: header is not a json object",
        ),
    ] {
        assert_eq!(refused(&keys, &text), message, "{text}");
    }
    // Stray bits in the last base64 character are not canonical: refused, not ignored. A
    // 64-byte ES256 signature ends in a character that carries 2 bits and 4 zero bits.
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let (head, last) = parts[2].split_at(parts[2].len() - 1);
    let index = alphabet.find(last).unwrap();
    assert_eq!(index & 0x0f, 0);
    let noisy = format!(
        "{}.{}.{head}{}",
        parts[0],
        parts[1],
        &alphabet[index | 1..=index | 1]
    );
    assert_eq!(
        refused(&keys, &noisy),
        "malformed jwt: signature is not unpadded base64url"
    );

    // A signed payload that is not a JSON object.
    let input = format!("{}.{}", b64(br#"{"alg":"EdDSA"}"#), b64(b"not json"));
    let token = format!("{input}.{}", b64(&keys.sign("EdDSA", input.as_bytes())));
    assert_eq!(
        refused(&keys, &token),
        "malformed jwt: payload is not a json object"
    );
}

#[test]
fn oversized_tokens_are_refused_before_parsing() {
    let keys = keys();
    let padding = "x".repeat(MAX_JWT_BYTES);
    let token = keys.token_for("ES256", &claims_with("padding", json!(padding)));
    assert_eq!(
        refused(&keys, &token),
        format!(
            "jwt is {} bytes, over the limit of {MAX_JWT_BYTES} bytes",
            token.len()
        )
    );
    let garbage = "a".repeat(MAX_JWT_BYTES + 1);
    assert!(matches!(
        keys.verify(&garbage),
        Err(JwtError::TooLarge { size, .. }) if size == MAX_JWT_BYTES + 1
    ));
    // Just under the limit is fine.
    let short = keys.token_for("ES256", &claims_with("padding", json!("")));
    let fill = (MAX_JWT_BYTES - short.len()) / 4 * 3;
    let token = keys.token_for("ES256", &claims_with("padding", json!("x".repeat(fill))));
    assert!(token.len() <= MAX_JWT_BYTES);
    assert!(keys.verify(&token).is_ok());
}

#[test]
fn header_typ_and_crit_are_checked() {
    let keys = keys();
    for typ in [
        "JWT",
        "jwt",
        "Jwt",
        "at+jwt",
        "AT+JWT",
        "application/jwt",
        "application/at+jwt",
    ] {
        let token = keys.token(&json!({"alg": "EdDSA", "typ": typ}), &claims(), "EdDSA");
        assert!(keys.verify(&token).is_ok(), "{typ}");
    }
    for (typ, message) in [
        (json!("JOSE"), "jwt type JOSE is not accepted"),
        (json!("dpop+jwt"), "jwt type dpop+jwt is not accepted"),
        (json!(""), "jwt type \"\" is not accepted"),
        (json!(1), "malformed jwt: header typ is not a string"),
    ] {
        let token = keys.token(&json!({"alg": "EdDSA", "typ": typ}), &claims(), "EdDSA");
        assert_eq!(refused(&keys, &token), message);
    }
    for crit in [json!(["exp"]), json!(["b64"]), json!([])] {
        let header = json!({"alg": "EdDSA", "crit": crit, "b64": false, "exp": 1});
        let token = keys.token(&header, &claims(), "EdDSA");
        assert_eq!(
            refused(&keys, &token),
            "jwt header has crit extensions, which are not supported"
        );
    }
}

#[test]
fn jwks_parsing_skips_what_it_cannot_use() {
    let keys = keys();
    let rsa = rsa_jwk(&keys.rsa, "rsa-1", None);
    let mut enc = rsa.clone();
    enc["use"] = json!("enc");
    let mut wrap_only = rsa.clone();
    wrap_only["key_ops"] = json!(["wrapKey"]);
    let mut verify_op = rsa.clone();
    verify_op["key_ops"] = json!(["verify"]);
    let mut leading_zero = rsa.clone();
    let n = URL_SAFE_NO_PAD.decode(rsa["n"].as_str().unwrap()).unwrap();
    leading_zero["n"] = json!(b64(&[&[0u8][..], &n].concat()));
    let skipped = [
        enc.clone(),
        wrap_only,
        json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}),
        json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}),
        json!({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"}),
        json!({"kty": "OKP", "crv": "X25519", "x": "AA"}),
        json!({"kty": "OKP", "crv": "Ed448", "x": "AA"}),
        json!({"kty": "AKP", "alg": "ML-DSA-44", "pub": "AA"}),
    ];
    let parse =
        |list: Vec<Value>| Jwks::parse(&serde_json::to_vec(&json!({ "keys": list })).unwrap());
    let mut list = skipped.to_vec();
    list.push(verify_op);
    list.push(leading_zero);
    let jwks = parse(list).unwrap();
    assert_eq!(jwks.len(), 2);
    assert!(!jwks.is_empty());
    // The leading-zero modulus still verifies.
    let token = keys.token(&json!({"alg": "RS256"}), &claims(), "RS256");
    assert!(verify(&token, &jwks, &expectations(&audiences())).is_ok());
    assert!(format!("{jwks:?}").contains("kid: Some(\"rsa-1\"), alg: None, type: RSA"));

    let none_usable = "invalid jwks: none of its 1 keys is a usable signature verification key \
                       (supported: RSA, EC P-256, EC P-384, OKP Ed25519)";
    assert_eq!(parse(vec![enc]).err().unwrap().to_string(), none_usable);
    assert_eq!(
        parse(skipped.to_vec()).err().unwrap().to_string(),
        none_usable.replace("its 1 keys", "its 8 keys")
    );
    assert_eq!(
        parse(vec![]).err().unwrap().to_string(),
        none_usable.replace("its 1 keys", "its 0 keys")
    );
}

#[test]
fn jwks_errors_name_the_key_and_field() {
    let keys = keys();
    let rsa = rsa_jwk(&keys.rsa, "rsa-1", None);
    let ec = ec_jwk(&keys.p256, "P-256", "ec-1");
    let with = |key: &Value, name: &str, value: Value| {
        let mut key = key.clone();
        if value.is_null() {
            key.as_object_mut().unwrap().remove(name);
        } else {
            key[name] = value;
        }
        key
    };
    let parse_one = |key: Value| {
        Jwks::parse(&serde_json::to_vec(&json!({"keys": [ec.clone(), key]})).unwrap())
            .err()
            .map(|error| error.to_string())
    };
    for (key, message) in [
        (
            with(&rsa, "n", Value::Null),
            "key 1 (kid rsa-1): field n is missing",
        ),
        (
            with(&rsa, "n", json!(5)),
            "key 1 (kid rsa-1): field n is not a string",
        ),
        (
            with(&rsa, "e", json!("AQAB=")),
            "key 1 (kid rsa-1): field e is not unpadded base64url",
        ),
        (
            with(&rsa, "n", json!("q+/A")),
            "key 1 (kid rsa-1): field n is not unpadded base64url",
        ),
        (
            with(&rsa, "n", json!(b64(&[0xc5; 128]))),
            "key 1 (kid rsa-1): field n is a 1024-bit modulus, outside 2048..=8192 bits",
        ),
        (
            with(&rsa, "e", json!("")),
            "key 1 (kid rsa-1): field e is not a usable public exponent",
        ),
        (
            with(&rsa, "d", json!("AQAB")),
            "key 1 (kid rsa-1): field d is private key material; publish public keys only",
        ),
        (
            with(&rsa, "kty", Value::Null),
            "key 1 (kid rsa-1): field kty is missing",
        ),
        (
            with(&rsa, "use", json!(["sig"])),
            "key 1 (kid rsa-1): field use is not a string",
        ),
        (
            with(&rsa, "alg", json!(256)),
            "key 1 (kid rsa-1): field alg is not a string",
        ),
        (
            with(&rsa, "key_ops", json!("verify")),
            "key 1 (kid rsa-1): field key_ops is not an array of strings",
        ),
        (
            with(&rsa, "kid", json!(1)),
            "key 1: field kid is not a string",
        ),
        (
            with(&with(&rsa, "kid", Value::Null), "n", Value::Null),
            "key 1: field n is missing",
        ),
        (
            with(&ec, "crv", Value::Null),
            "key 1 (kid ec-1): field crv is missing",
        ),
        (
            with(&ec, "x", json!(b64(&[1; 31]))),
            "key 1 (kid ec-1): field x is 31 bytes, not 32",
        ),
        (
            with(&ec, "y", Value::Null),
            "key 1 (kid ec-1): field y is missing",
        ),
        (
            with(&ec, "crv", json!("P-384")),
            "key 1 (kid ec-1): field x is 32 bytes, not 48",
        ),
        (
            with(&ec, "d", json!("AA")),
            "key 1 (kid ec-1): field d is private key material; publish public keys only",
        ),
        (
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 33])}),
            "key 1: field x is 33 bytes, not 32",
        ),
        (json!("RSA"), "key 1 is not a json object"),
    ] {
        assert_eq!(parse_one(key), Some(format!("invalid jwks: {message}")));
    }
    for (document, message) in [
        (&b"not json"[..], "the document is not valid json"),
        (b"[]", "the document is not a json object"),
        (b"{}", "field keys is missing"),
        (br#"{"keys": {}}"#, "field keys is not an array"),
    ] {
        assert_eq!(
            Jwks::parse(document).err().unwrap().to_string(),
            format!("invalid jwks: {message}")
        );
    }
}

/// Prints one of each error so the wording is reviewed in one place.
#[test]
fn every_message_is_lower_case_and_names_its_subject() {
    let all = [
        JwtError::InvalidJwks("key 0 (kid a): field n is missing".into()),
        JwtError::TooLarge {
            size: 20_000,
            limit: MAX_JWT_BYTES,
        },
        JwtError::Malformed("header is not a json object"),
        JwtError::AlgorithmNotAccepted("HS256".into()),
        JwtError::TypeNotAccepted("JOSE".into()),
        JwtError::CriticalExtension,
        JwtError::UnknownKey("k1".into()),
        JwtError::KeyMismatch {
            kid: "k1".into(),
            algorithm: "ES256",
        },
        JwtError::NoKeyForAlgorithm("EdDSA"),
        JwtError::BadSignature,
        JwtError::MissingClaim("sub"),
        JwtError::InvalidClaim {
            claim: "exp",
            reason: "is not a number",
        },
        JwtError::Expired(display_time(0)),
        JwtError::NotYetValid(display_time(1)),
        JwtError::IssuedInFuture(display_time(86_400)),
        JwtError::WrongIssuer("https://evil".into()),
        JwtError::WrongAudience("x".into()),
    ];
    let printed: Vec<String> = all.iter().map(ToString::to_string).collect();
    assert_eq!(
        printed,
        [
            "invalid jwks: key 0 (kid a): field n is missing",
            "jwt is 20000 bytes, over the limit of 16384 bytes",
            "malformed jwt: header is not a json object",
            "jwt algorithm HS256 is not accepted",
            "jwt type JOSE is not accepted",
            "jwt header has crit extensions, which are not supported",
            "no key in the jwks has kid k1",
            "the jwks key with kid k1 does not fit jwt algorithm ES256",
            "no key in the jwks fits jwt algorithm EdDSA",
            "jwt signature does not verify",
            "jwt claim sub is missing",
            "jwt claim exp is not a number",
            "jwt expired at 1970-01-01T00:00:00Z",
            "jwt is not valid before 1970-01-01T00:00:01Z",
            "jwt was issued in the future, at 1970-01-02T00:00:00Z",
            "jwt issuer https://evil is not the accepted issuer",
            "jwt audience [x] is not among the accepted audiences",
        ]
    );
}

#[test]
fn untrusted_strings_are_quoted_and_truncated() {
    assert_eq!(quote("HS256"), "HS256");
    assert_eq!(
        quote("https://idp.example.com/a_b-c"),
        "https://idp.example.com/a_b-c"
    );
    assert_eq!(quote(""), "\"\"");
    assert_eq!(quote("a b"), "\"a b\"");
    assert_eq!(quote("x\u{1b}[31m"), "\"x\\u{1b}[31m\"");
    let long = "a".repeat(100);
    assert_eq!(
        quote(&long),
        format!("\"{}...\"", "a".repeat(MAX_QUOTED_CHARS))
    );
    assert_eq!(
        quote(&"é".repeat(100)).chars().count(),
        MAX_QUOTED_CHARS + 5
    );
}
