//! Signed deployment tokens: the verifier's proof that one exact BPF object
//! passed verification on one kernel, which `deploy` demands before attaching.
//!
//! A token is a PASETO v4.public (Ed25519) token. The payload is [`Claims`] as
//! JSON; the footer is `{"kid":"<16 hex>"}`, the id of the signing key, so that
//! a token from another machine's key is told apart from a tampered one. The
//! key pair lives beside the daemon's state ([`Keys::load_or_create`]).
//!
//! v4.public signs but does not encrypt: claims are readable by anyone who
//! holds the token, so they carry hashes and names only, never secrets.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use pasetors::keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate};
use pasetors::paserk::FormatAsPaserk;
use pasetors::token::{Public, UntrustedToken};
use pasetors::version4::{PublicToken, V4};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// The `iss` claim of every schedcp token.
pub const ISSUER: &str = "schedcp";
/// Secret key file name inside the key directory (PASERK `k4.secret.…`).
pub const SECRET_KEY_FILE: &str = "token-key.ed25519";
/// Public key file name inside the key directory (PASERK `k4.public.…`).
pub const PUBLIC_KEY_FILE: &str = "token-key.pub";

/// Shortest lifetime a token may be issued with: anything shorter would
/// expire between `verify` and `deploy` in normal use.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// Longest lifetime: a verification says something about one kernel and one
/// set of workloads, and goes stale; re-verify rather than keep tokens forever.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Lifetime used when the caller does not choose one.
pub const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How far in the future `iat` may lie before a token counts as not yet valid
/// (tolerates small clock steps, e.g. an NTP correction after issuing).
const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Upper bound on accepted input, so a huge paste is refused before decoding.
/// Real tokens are well under 1 KiB.
const MAX_TOKEN_LEN: usize = 8192;
const HEADER: &str = "v4.public.";

/// What a deployment token asserts. Times are RFC 3339 strings, as PASETO's
/// registered claims `iat`/`exp` require.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Claims {
    /// Unique token id: 128 random bits as 32 lowercase hex digits.
    pub jti: String,
    /// Always [`ISSUER`].
    pub iss: String,
    /// Issued at (RFC 3339, UTC).
    pub iat: String,
    /// Expires at (RFC 3339, UTC).
    pub exp: String,
    /// Policy name.
    pub policy: String,
    /// Policy version; 0 for an ad-hoc file that is not in the repository.
    pub version: u32,
    /// SHA-256 (lowercase hex) of the verified BPF object.
    pub object_sha256: String,
    /// SHA-256 (lowercase hex) of the verification report.
    pub report_sha256: String,
    /// `uname -r` of the kernel the object was verified on.
    pub kernel_release: String,
    /// `sched_ext_ops.name` of the scheduler.
    pub ops_name: String,
    /// Whether the verifying kernel had sched_ext (false: only static and
    /// load checks ran, no attach).
    pub sched_ext: bool,
}

impl Claims {
    /// `iat` as a time, if it parses.
    pub fn issued_at(&self) -> Option<DateTime<Utc>> {
        parse_time(&self.iat)
    }

    /// `exp` as a time, if it parses.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        parse_time(&self.exp)
    }
}

/// The claims a caller chooses; [`Keys::issue`] adds `jti`, `iss`, `iat`, `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Binding {
    pub policy: String,
    pub version: u32,
    pub object_sha256: String,
    pub report_sha256: String,
    pub kernel_release: String,
    pub ops_name: String,
    pub sched_ext: bool,
}

/// What the token must be bound to; `None` skips that check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expect {
    pub object_sha256: Option<String>,
    pub kernel_release: Option<String>,
}

/// Why a token was refused. Checks run in the order format → key id →
/// signature → times → bindings, so the first failing one is reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token was signed by another schedcp key (kid {kid}); this machine accepts {ours} (add the signer's public key to deploy.trusted_keys to accept it)")]
    ForeignKey { kid: String, ours: String },
    #[error(
        "token signature is invalid under this machine's key: its content or footer was changed after signing"
    )]
    Tampered,
    #[error("token expired at {exp} ({ago} ago); verify the scheduler again for a fresh token")]
    Expired { exp: String, ago: String },
    #[error(
        "token is not valid yet: issued at {iat}, {ahead} in the future (is the clock right?)"
    )]
    NotYetValid { iat: String, ahead: String },
    #[error("token is for object sha256 {}…, this object is {}…", short(.token), short(.actual))]
    ObjectMismatch { token: String, actual: String },
    #[error(
        "token was verified on kernel {token}, this machine runs {actual}; verify the scheduler on this kernel"
    )]
    KernelMismatch { token: String, actual: String },
}

impl From<TokenError> for Error {
    /// Every refusal is about the token the caller handed in.
    fn from(e: TokenError) -> Self {
        Error::Input(e.to_string())
    }
}

/// This machine's token signing key pair.
pub struct Keys {
    secret: AsymmetricSecretKey<V4>,
    public: AsymmetricPublicKey<V4>,
    kid: String,
}

impl fmt::Debug for Keys {
    // Never print key material, not even by accident in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Loads the key pair from `dir`, creating the directory (0700) and a new
    /// key pair if there is none. Safe against concurrent callers: exactly one
    /// key is ever published, and every caller ends up with it.
    pub fn load_or_create(dir: &Path) -> Result<Keys, Error> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| setup_io("cannot create token key directory", dir, e))?;
        let secret_path = dir.join(SECRET_KEY_FILE);
        // Two rounds suffice: if our publish loses the race, the winner's
        // file exists on the second look.
        for _ in 0..2 {
            match read_secret(&secret_path)? {
                Some(secret) => return Keys::from_secret(dir, secret),
                None => {
                    let pair = AsymmetricKeyPair::<V4>::generate()
                        .map_err(|e| anyhow::anyhow!("generating an Ed25519 key: {e:?}"))?;
                    if publish_secret(dir, &secret_path, &pair.secret)? {
                        return Keys::from_secret(dir, pair.secret);
                    }
                }
            }
        }
        Err(Error::Setup(format!(
            "{} keeps disappearing while being created; is another process deleting it?",
            secret_path.display()
        )))
    }

    fn from_secret(dir: &Path, secret: AsymmetricSecretKey<V4>) -> Result<Keys, Error> {
        let public = AsymmetricPublicKey::<V4>::try_from(&secret)
            .map_err(|e| anyhow::anyhow!("deriving the public key: {e:?}"))?;
        ensure_public_file(&dir.join(PUBLIC_KEY_FILE), &public)?;
        let kid = key_id(&public);
        Ok(Keys {
            secret,
            public,
            kid,
        })
    }

    /// Key id: first 16 hex digits of SHA-256 of the raw public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a PASERK string (`k4.public.…`), e.g. to verify
    /// this machine's tokens elsewhere.
    pub fn public_paserk(&self) -> String {
        paserk(&self.public)
    }

    /// Signs a token for `binding`, valid from now for `ttl`
    /// ([`MIN_TTL`]`..=`[`MAX_TTL`]).
    pub fn issue(&self, binding: &Binding, ttl: Duration) -> Result<String, Error> {
        self.issue_at(binding, ttl, Utc::now())
    }

    /// [`Keys::issue`] with an explicit clock, so tests need not sleep
    /// (and can sign a token that has already expired).
    pub fn issue_at(
        &self,
        binding: &Binding,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<String, Error> {
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(Error::Input(format!(
                "token lifetime {} is out of range ({} to {})",
                human(ttl),
                human(MIN_TTL),
                human(MAX_TTL)
            )));
        }
        validate_binding(binding)?;
        // Whole seconds: the RFC 3339 claims carry no fraction, so `exp - iat`
        // is exactly the TTL.
        let now = now.trunc_subsecs(0);
        let exp = now + chrono::Duration::from_std(ttl).map_err(|e| anyhow::anyhow!("ttl: {e}"))?;
        let claims = Claims {
            jti: random_hex::<16>()?,
            iss: ISSUER.to_string(),
            iat: fmt_time(now),
            exp: fmt_time(exp),
            policy: binding.policy.clone(),
            version: binding.version,
            object_sha256: binding.object_sha256.to_ascii_lowercase(),
            report_sha256: binding.report_sha256.to_ascii_lowercase(),
            kernel_release: binding.kernel_release.clone(),
            ops_name: binding.ops_name.clone(),
            sched_ext: binding.sched_ext,
        };
        let payload = serde_json::to_vec(&claims).map_err(anyhow::Error::from)?;
        let footer = serde_json::to_vec(&Footer {
            kid: self.kid.clone(),
        })
        .map_err(anyhow::Error::from)?;
        PublicToken::sign(&self.secret, &payload, Some(&footer), None)
            .map_err(|e| Error::Internal(anyhow::anyhow!("signing the token: {e:?}")))
    }

    /// Verifies `token` against this machine's key, the clock and `expect`.
    pub fn check(&self, token: &str, expect: &Expect) -> Result<Claims, TokenError> {
        self.check_at(token, expect, Utc::now())
    }

    /// [`Keys::check`] with an explicit clock.
    pub(crate) fn check_at(
        &self,
        token: &str,
        expect: &Expect,
        now: DateTime<Utc>,
    ) -> Result<Claims, TokenError> {
        check_with(token, expect, now, Some(self), &[])
    }

    /// This machine's public key as a [`TrustedKey`].
    pub fn trusted(&self) -> TrustedKey {
        TrustedKey {
            kid: self.kid.clone(),
            public: self.public.clone(),
        }
    }
}

/// PASETO implicit assertion of audit checkpoints: it enters the signature
/// without being in the token, so a checkpoint can never pass as a deploy
/// token, nor a deploy token as a checkpoint.
const CHECKPOINT_ASSERTION: &[u8] = b"schedcp audit checkpoint v1";

/// What an audit checkpoint signs: the chain reached entry `seq`, whose
/// hash is `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
}

impl Keys {
    /// Sign `c` with this machine's key (a `v4.public` PASETO).
    pub fn sign_checkpoint(&self, c: &Checkpoint) -> Result<String, Error> {
        let payload = serde_json::to_vec(c).map_err(anyhow::Error::from)?;
        let footer = serde_json::to_vec(&Footer {
            kid: self.kid.clone(),
        })
        .map_err(anyhow::Error::from)?;
        PublicToken::sign(
            &self.secret,
            &payload,
            Some(&footer),
            Some(CHECKPOINT_ASSERTION),
        )
        .map_err(|e| Error::Internal(anyhow::anyhow!("signing an audit checkpoint: {e:?}")))
    }
}

impl TrustedKey {
    /// The checkpoint `token` signs, if this key signed it.
    pub fn open_checkpoint(&self, token: &str) -> Result<Checkpoint, String> {
        let (untrusted, footer) = parse_untrusted(token).map_err(|e| e.to_string())?;
        let kid = footer.map(|f| f.kid).unwrap_or_default();
        if kid != self.kid {
            return Err(format!(
                "signed by key {kid:?}, not this node's ({})",
                self.kid
            ));
        }
        let t = PublicToken::verify(&self.public, &untrusted, None, Some(CHECKPOINT_ASSERTION))
            .map_err(|_| "the signature does not verify".to_string())?;
        serde_json::from_str(t.payload()).map_err(|e| format!("not a checkpoint: {e}"))
    }
}

/// A public key whose tokens this machine accepts besides its own: the
/// verifier of another machine (a lab host signing for the nodes it drives).
#[derive(Clone)]
pub struct TrustedKey {
    kid: String,
    public: AsymmetricPublicKey<V4>,
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedKey")
            .field("kid", &self.kid)
            .finish()
    }
}

impl TrustedKey {
    /// From a `k4.public.…` PASERK (what `Keys::public_paserk` prints).
    pub fn from_paserk(s: &str) -> Result<TrustedKey, Error> {
        let public = AsymmetricPublicKey::<V4>::try_from(s.trim()).map_err(|_| {
            Error::Input(format!(
                "trusted key {:?} is not a k4.public PASERK (the content of another machine's {PUBLIC_KEY_FILE})",
                s.get(..24).unwrap_or(s)
            ))
        })?;
        Ok(TrustedKey {
            kid: key_id(&public),
            public,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// Verifies `token` against this machine's key and any `trusted` ones.
pub fn check_trusted(
    token: &str,
    expect: &Expect,
    own: Option<&Keys>,
    trusted: &[TrustedKey],
) -> Result<Claims, TokenError> {
    check_with(token, expect, Utc::now(), own, trusted)
}

fn check_with(
    token: &str,
    expect: &Expect,
    now: DateTime<Utc>,
    own: Option<&Keys>,
    trusted: &[TrustedKey],
) -> Result<Claims, TokenError> {
    let (untrusted, footer) = parse_untrusted(token)?;
    let kid = footer.map(|f| f.kid).ok_or_else(|| {
        TokenError::Malformed(
            "no footer with the signing key id (kid); schedcp tokens always carry one".into(),
        )
    })?;
    // Key id before signature: a foreign key fails the signature too,
    // but "wrong machine" is the useful diagnosis.
    let public = own
        .filter(|k| k.kid == kid)
        .map(|k| &k.public)
        .or_else(|| trusted.iter().find(|t| t.kid == kid).map(|t| &t.public))
        .ok_or_else(|| TokenError::ForeignKey {
            kid: kid.clone(),
            ours: own
                .map(|k| k.kid.clone())
                .into_iter()
                .chain(trusted.iter().map(|t| t.kid.clone()))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let trusted = PublicToken::verify(public, &untrusted, None, None).map_err(|e| match e {
        pasetors::errors::Error::TokenValidation => TokenError::Tampered,
        other => TokenError::Malformed(format!("cannot verify: {other:?}")),
    })?;
    let claims: Claims = serde_json::from_str(trusted.payload())
        .map_err(|e| TokenError::Malformed(format!("signed payload is not schedcp claims: {e}")))?;
    if claims.iss != ISSUER {
        return Err(TokenError::Malformed(format!(
            "issuer is {:?}, expected {ISSUER:?}",
            claims.iss
        )));
    }
    let exp = claims
        .expires_at()
        .ok_or_else(|| TokenError::Malformed(format!("exp {:?} is not RFC 3339", claims.exp)))?;
    let iat = claims
        .issued_at()
        .ok_or_else(|| TokenError::Malformed(format!("iat {:?} is not RFC 3339", claims.iat)))?;
    if now >= exp {
        return Err(TokenError::Expired {
            exp: claims.exp.clone(),
            ago: human((now - exp).to_std().unwrap_or_default()),
        });
    }
    let ahead = (iat - now).to_std().unwrap_or_default();
    if ahead > CLOCK_SKEW {
        return Err(TokenError::NotYetValid {
            iat: claims.iat.clone(),
            ahead: human(ahead),
        });
    }
    if let Some(actual) = &expect.object_sha256 {
        if !claims.object_sha256.eq_ignore_ascii_case(actual) {
            return Err(TokenError::ObjectMismatch {
                token: claims.object_sha256.clone(),
                actual: actual.to_ascii_lowercase(),
            });
        }
    }
    if let Some(actual) = &expect.kernel_release {
        if claims.kernel_release != *actual {
            return Err(TokenError::KernelMismatch {
                token: claims.kernel_release.clone(),
                actual: actual.clone(),
            });
        }
    }
    Ok(claims)
}

/// Decodes a token WITHOUT checking its signature, times or bindings: for
/// display (`token show`) only. Never base a decision on the result.
pub fn decode_unverified(token: &str) -> Result<(Claims, Option<String>), TokenError> {
    let (untrusted, footer) = parse_untrusted(token)?;
    let claims = serde_json::from_slice(untrusted.untrusted_payload())
        .map_err(|e| TokenError::Malformed(format!("payload is not schedcp claims: {e}")))?;
    Ok((claims, footer.map(|f| f.kid)))
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
struct Footer {
    kid: String,
}

/// The structural checks shared by `check` and `decode_unverified`. The footer
/// is `None` when absent, an error when present but not schedcp's shape.
fn parse_untrusted(
    token: &str,
) -> Result<(UntrustedToken<Public, V4>, Option<Footer>), TokenError> {
    // Tokens are often read from files or pasted: ignore surrounding blanks.
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Malformed("empty token".into()));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed(format!(
            "{} bytes long; schedcp tokens are under {MAX_TOKEN_LEN}",
            token.len()
        )));
    }
    if !token.starts_with(HEADER) {
        let parts: Vec<&str> = token.splitn(3, '.').collect();
        let looks_paseto = parts.len() == 3
            && parts[0].len() == 2
            && parts[0].starts_with('v')
            && matches!(parts[1], "local" | "public");
        return Err(TokenError::Malformed(if looks_paseto {
            format!(
                "this is a {}.{} PASETO token; schedcp tokens are v4.public",
                parts[0], parts[1]
            )
        } else {
            "not a PASETO token (expected v4.public.<payload>.<footer>)".into()
        }));
    }
    let n_parts = token.split('.').count();
    if n_parts > 4 {
        return Err(TokenError::Malformed(format!(
            "{n_parts} dot-separated parts; a PASETO token has 3 or 4"
        )));
    }
    let untrusted = UntrustedToken::<Public, V4>::try_from(token).map_err(|e| {
        TokenError::Malformed(match e {
            pasetors::errors::Error::Base64 => {
                "payload or footer is not unpadded base64url".to_string()
            }
            pasetors::errors::Error::TokenFormat => {
                "payload is missing or shorter than an Ed25519 signature".to_string()
            }
            other => format!("{other:?}"),
        })
    })?;
    let raw = untrusted.untrusted_footer();
    if raw.is_empty() {
        return Ok((untrusted, None));
    }
    match serde_json::from_slice::<Footer>(raw) {
        Ok(f) if is_kid(&f.kid) => Ok((untrusted, Some(f))),
        Ok(f) => Err(TokenError::Malformed(format!(
            "footer kid {:?} is not 16 lowercase hex digits",
            f.kid
        ))),
        Err(e) => Err(TokenError::Malformed(format!(
            "footer is not {{\"kid\": \"…\"}} JSON: {e}"
        ))),
    }
}

fn is_kid(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn validate_binding(b: &Binding) -> Result<(), Error> {
    let bad = |what: &str| Err(Error::Input(format!("cannot issue a token: {what}")));
    if b.policy.trim().is_empty() {
        return bad("policy name is empty");
    }
    if !is_sha256_hex(&b.object_sha256) {
        return bad("object_sha256 is not 64 hex digits");
    }
    if !is_sha256_hex(&b.report_sha256) {
        return bad("report_sha256 is not 64 hex digits");
    }
    if b.kernel_release.trim().is_empty() {
        return bad("kernel_release is empty");
    }
    Ok(())
}

fn key_id(public: &AsymmetricPublicKey<V4>) -> String {
    let digest = Sha256::digest(public.as_bytes());
    hex::encode(&digest[..8])
}

fn paserk(key: &impl FormatAsPaserk) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail; the key was validated on creation.
    FormatAsPaserk::fmt(key, &mut s).expect("PASERK formatting into a String");
    s
}

fn random_hex<const N: usize>() -> Result<String, Error> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf)
        .map_err(|e| Error::Internal(anyhow::anyhow!("reading the OS random source: {e}")))?;
    Ok(hex::encode(buf))
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Coarse human duration: the two largest units ("3d 4h", "5m 12s").
fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn setup_io(what: &str, path: &Path, e: io::Error) -> Error {
    Error::Setup(format!("{what} {}: {e}", path.display()))
}

/// Reads the secret key if the file exists, refusing one that others could
/// read or that belongs to someone else.
fn read_secret(path: &Path) -> Result<Option<AsymmetricSecretKey<V4>>, Error> {
    // O_NOFOLLOW: a symlink planted in place of the key is refused, not followed.
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::Setup(format!(
                "{} is a symlink; the token key must be a regular file (move the real file there)",
                path.display()
            )))
        }
        Err(e) => return Err(setup_io("cannot open token key", path, e)),
    };
    // fstat the opened file, not the path, so the checks apply to what we read.
    let meta = file
        .metadata()
        .map_err(|e| setup_io("cannot stat token key", path, e))?;
    if !meta.is_file() {
        return Err(Error::Setup(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Error::Setup(format!(
            "token key {} is owned by uid {}, not by the current user (uid {me}); refusing it. \
             Fix: chown {me} {}",
            path.display(),
            meta.uid(),
            path.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Setup(format!(
            "token key {} has mode {mode:04o}: group/other users can access it, so it may be \
             leaked; refusing it. Fix: chmod 600 {} (and consider rotating the key)",
            path.display(),
            path.display()
        )));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| setup_io("cannot read token key", path, e))?;
    let parsed = AsymmetricSecretKey::<V4>::try_from(text.trim());
    // Best effort: do not leave the encoded secret in freed memory.
    let mut bytes = text.into_bytes();
    bytes.fill(0);
    std::hint::black_box(&bytes);
    match parsed {
        Ok(k) => Ok(Some(k)),
        Err(_) => Err(Error::Setup(format!(
            "{} is not a schedcp token key (expected a k4.secret PASERK); move it aside to \
             generate a new key (tokens signed by the old key then stop verifying)",
            path.display()
        ))),
    }
}

/// Writes the secret to a private temporary file, fsyncs it, then publishes
/// it under `final_path` without ever replacing an existing key. Returns false
/// when another process published first (its key wins).
fn publish_secret(
    dir: &Path,
    final_path: &Path,
    secret: &AsymmetricSecretKey<V4>,
) -> Result<bool, Error> {
    let tmp = temp_path(dir, SECRET_KEY_FILE)?;
    let mut text = paserk(secret);
    text.push('\n');
    let written = write_new_file(&tmp, text.as_bytes(), 0o600);
    let mut bytes = text.into_bytes();
    bytes.fill(0);
    std::hint::black_box(&bytes);
    written?;
    // link(2) rather than rename(2): rename silently replaces a key that a
    // concurrent caller published a moment ago, and that caller would then
    // sign with a key nobody can verify. link fails with EEXIST instead.
    let linked = fs::hard_link(&tmp, final_path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(setup_io("cannot publish token key", final_path, e)),
    }
}

/// Writes the public key beside the secret if it is missing; refuses a
/// public key file that does not belong to the secret.
fn ensure_public_file(path: &Path, public: &AsymmetricPublicKey<V4>) -> Result<(), Error> {
    let want = paserk(public);
    match fs::read_to_string(path) {
        Ok(have) if have.trim() == want => return Ok(()),
        Ok(_) => {
            return Err(Error::Setup(format!(
                "{} does not match the secret key beside it; delete it and it will be rewritten",
                path.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(setup_io("cannot read public token key", path, e)),
    }
    // Overwriting is fine here: every writer derives the same bytes from the
    // one published secret.
    crate::host::fs::atomic_write(path, format!("{want}\n").as_bytes(), Some(0o644))
        .map_err(|e| setup_io("cannot write public token key", path, e))
}

fn temp_path(dir: &Path, name: &str) -> Result<PathBuf, Error> {
    Ok(dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        random_hex::<8>()?
    )))
}

/// Creates `path` exclusively with `mode`, writes `data` and fsyncs it; on
/// failure removes what it created.
fn write_new_file(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    // O_EXCL: never write into a file someone else created or planted.
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| setup_io("cannot create", path, e))?;
    // The umask may have narrowed the mode; set it exactly.
    let written = f
        .set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(data))
        .and_then(|()| f.sync_all());
    written.map_err(|e| {
        let _ = fs::remove_file(path);
        setup_io("cannot write", path, e)
    })
}

/// fsync the directory so a published name survives a crash.
fn sync_dir(dir: &Path) -> Result<(), Error> {
    crate::host::fs::sync_dir(dir).map_err(|e| setup_io("cannot sync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn binding() -> Binding {
        Binding {
            policy: "fifo".into(),
            version: 3,
            object_sha256: "ab".repeat(32),
            report_sha256: "cd".repeat(32),
            kernel_release: "6.16.3+deb14-cloud-amd64".into(),
            ops_name: "fifo".into(),
            sched_ext: true,
        }
    }

    fn keys() -> (tempfile::TempDir, Keys) {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_create(&dir.path().join("keys")).unwrap();
        (dir, keys)
    }

    fn expect_all() -> Expect {
        Expect {
            object_sha256: Some("ab".repeat(32)),
            kernel_release: Some("6.16.3+deb14-cloud-amd64".into()),
        }
    }

    #[test]
    fn round_trip() {
        let (_d, k) = keys();
        let tok = k.issue(&binding(), DEFAULT_TTL).unwrap();
        assert!(tok.starts_with("v4.public."));
        let c = k.check(&tok, &expect_all()).unwrap();
        assert_eq!(c.iss, ISSUER);
        assert_eq!(c.policy, "fifo");
        assert_eq!(c.version, 3);
        assert_eq!(c.object_sha256, "ab".repeat(32));
        assert_eq!(c.report_sha256, "cd".repeat(32));
        assert_eq!(c.ops_name, "fifo");
        assert!(c.sched_ext);
        assert_eq!(c.jti.len(), 32);
        assert!(c.jti.bytes().all(|b| b.is_ascii_hexdigit()));
        let ttl = c.expires_at().unwrap() - c.issued_at().unwrap();
        assert_eq!(ttl.num_seconds(), DEFAULT_TTL.as_secs() as i64);
        // No expectations: only signature and times are checked.
        assert_eq!(k.check(&tok, &Expect::default()).unwrap(), c);
        // Surrounding whitespace (a token read from a file) is fine.
        assert_eq!(k.check(&format!("{tok}\n"), &Expect::default()).unwrap(), c);
        // Unverified decode sees the same claims and our kid.
        let (u, kid) = decode_unverified(&tok).unwrap();
        assert_eq!(u, c);
        assert_eq!(kid.as_deref(), Some(k.kid()));
        // Fresh jti per token.
        let tok2 = k.issue(&binding(), DEFAULT_TTL).unwrap();
        assert_ne!(decode_unverified(&tok2).unwrap().0.jti, c.jti);
    }

    #[test]
    fn kid_is_public_key_hash_and_reload_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = Keys::load_or_create(dir.path()).unwrap();
        assert!(is_kid(k1.kid()));
        let k2 = Keys::load_or_create(dir.path()).unwrap();
        assert_eq!(k1.kid(), k2.kid());
        let pubtext = fs::read_to_string(dir.path().join(PUBLIC_KEY_FILE)).unwrap();
        assert_eq!(pubtext.trim(), k1.public_paserk());
        let pk = AsymmetricPublicKey::<V4>::try_from(pubtext.trim()).unwrap();
        assert_eq!(key_id(&pk), k1.kid());
        // A token from before the reload still verifies.
        let tok = k1.issue(&binding(), MIN_TTL).unwrap();
        k2.check(&tok, &expect_all()).unwrap();
        assert!(!format!("{k1:?}").contains("k4.secret"));
    }

    #[test]
    fn other_object() {
        let (_d, k) = keys();
        let tok = k.issue(&binding(), DEFAULT_TTL).unwrap();
        let expect = Expect {
            object_sha256: Some("EF".repeat(32)),
            kernel_release: None,
        };
        let e = k.check(&tok, &expect).unwrap_err();
        assert_eq!(
            e,
            TokenError::ObjectMismatch {
                token: "ab".repeat(32),
                actual: "ef".repeat(32)
            }
        );
        assert_eq!(
            e.to_string(),
            "token is for object sha256 abababababab…, this object is efefefefefef…"
        );
        // Case does not matter for hex.
        let upper = Expect {
            object_sha256: Some("AB".repeat(32)),
            kernel_release: None,
        };
        k.check(&tok, &upper).unwrap();
    }

    #[test]
    fn kernel_mismatch() {
        let (_d, k) = keys();
        let tok = k.issue(&binding(), DEFAULT_TTL).unwrap();
        let expect = Expect {
            object_sha256: None,
            kernel_release: Some("6.1.0-40-amd64".into()),
        };
        let e = k.check(&tok, &expect).unwrap_err();
        assert!(matches!(e, TokenError::KernelMismatch { .. }), "{e}");
        assert!(e.to_string().contains("6.16.3+deb14-cloud-amd64"), "{e}");
        assert!(e.to_string().contains("6.1.0-40-amd64"), "{e}");
    }

    #[test]
    fn expired_and_not_yet_valid() {
        let (_d, k) = keys();
        let now = Utc::now();
        let issued = now - chrono::Duration::hours(2);
        let tok = k
            .issue_at(&binding(), Duration::from_secs(3600), issued)
            .unwrap();
        match k.check_at(&tok, &expect_all(), now).unwrap_err() {
            TokenError::Expired { exp, ago } => {
                assert_eq!(exp, fmt_time(issued + chrono::Duration::hours(1)));
                assert_eq!(ago, "1h 0m");
            }
            e => panic!("wrong error: {e}"),
        }
        // Valid just before exp, expired exactly at exp.
        let exp = issued + chrono::Duration::hours(1);
        k.check_at(&tok, &expect_all(), exp - chrono::Duration::seconds(1))
            .unwrap();
        assert!(matches!(
            k.check_at(&tok, &expect_all(), exp),
            Err(TokenError::Expired { .. })
        ));
        // Issued in the future beyond the skew allowance.
        let future = k
            .issue_at(&binding(), DEFAULT_TTL, now + chrono::Duration::hours(1))
            .unwrap();
        let e = k.check_at(&future, &expect_all(), now).unwrap_err();
        assert!(matches!(e, TokenError::NotYetValid { .. }), "{e}");
        // Within the skew allowance it is accepted.
        let near = k
            .issue_at(&binding(), DEFAULT_TTL, now + chrono::Duration::seconds(30))
            .unwrap();
        k.check_at(&near, &expect_all(), now).unwrap();
        // Times come before bindings: an expired token for another object says "expired".
        let other = Expect {
            object_sha256: Some("00".repeat(32)),
            kernel_release: None,
        };
        assert!(matches!(
            k.check_at(&tok, &other, now),
            Err(TokenError::Expired { .. })
        ));
    }

    #[test]
    fn ttl_bounds_and_binding_validation() {
        let (_d, k) = keys();
        for ttl in [Duration::from_secs(59), MAX_TTL + Duration::from_secs(1)] {
            assert!(matches!(k.issue(&binding(), ttl), Err(Error::Input(_))));
        }
        k.issue(&binding(), MIN_TTL).unwrap();
        k.issue(&binding(), MAX_TTL).unwrap();
        let mut b = binding();
        b.object_sha256 = "xyz".into();
        assert!(matches!(k.issue(&b, DEFAULT_TTL), Err(Error::Input(_))));
    }

    /// Replaces one base64 character in the middle of the payload part.
    fn flip_payload_char(tok: &str) -> String {
        let parts: Vec<&str> = tok.split('.').collect();
        let mut payload: Vec<u8> = parts[2].as_bytes().to_vec();
        let i = payload.len() / 3;
        payload[i] = if payload[i] == b'A' { b'B' } else { b'A' };
        format!(
            "v4.public.{}.{}",
            String::from_utf8(payload).unwrap(),
            parts[3]
        )
    }

    #[test]
    fn tampered_payload_and_footer() {
        let (_d, k) = keys();
        let tok = k.issue(&binding(), DEFAULT_TTL).unwrap();
        let bad = flip_payload_char(&tok);
        assert_ne!(bad, tok);
        assert_eq!(
            k.check(&bad, &expect_all()).unwrap_err(),
            TokenError::Tampered
        );
        // Footer changed but still naming our kid (extra whitespace in the JSON).
        let parts: Vec<&str> = tok.split('.').collect();
        let footer = format!("{{ \"kid\": \"{}\" }}", k.kid());
        let forged = format!("v4.public.{}.{}", parts[2], b64url(footer.as_bytes()));
        assert_eq!(
            k.check(&forged, &expect_all()).unwrap_err(),
            TokenError::Tampered
        );
        // Footer removed.
        let stripped = format!("v4.public.{}", parts[2]);
        assert!(matches!(
            k.check(&stripped, &expect_all()),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn foreign_key() {
        let (_d1, ours) = keys();
        let (_d2, theirs) = keys();
        assert_ne!(ours.kid(), theirs.kid());
        let tok = theirs.issue(&binding(), DEFAULT_TTL).unwrap();
        let e = ours.check(&tok, &expect_all()).unwrap_err();
        assert_eq!(
            e,
            TokenError::ForeignKey {
                kid: theirs.kid().into(),
                ours: ours.kid().into()
            }
        );
        assert!(
            e.to_string().contains("signed by another schedcp key"),
            "{e}"
        );
        // A foreign token relabelled with our kid fails the signature instead.
        let parts: Vec<&str> = tok.split('.').collect();
        let footer = serde_json::to_vec(&Footer {
            kid: ours.kid().into(),
        })
        .unwrap();
        let relabelled = format!("v4.public.{}.{}", parts[2], b64url(&footer));
        assert_eq!(
            ours.check(&relabelled, &expect_all()).unwrap_err(),
            TokenError::Tampered
        );
        // Error kind for the CLI.
        assert!(matches!(Error::from(e), Error::Input(_)));
    }

    #[test]
    fn malformed_inputs() {
        let (_d, k) = keys();
        let cases: &[(&str, &str)] = &[
            ("", "empty token"),
            ("   \n", "empty token"),
            ("v3.local.AAAA", "v3.local PASETO token"),
            ("v4.local.AAAA.BBBB", "v4.local PASETO token"),
            ("eyJhbGciOiJIUzI1NiJ9.e30.sig", "not a PASETO token"),
            ("garbage !!", "not a PASETO token"),
            ("v4.public.", "payload is missing"),
            ("v4.public.AAAA", "shorter than an Ed25519 signature"),
            ("v4.public.!!!!.x", "base64url"),
            ("v4.public.a.b.c", "parts"),
        ];
        for (input, want) in cases {
            match k.check(input, &Expect::default()) {
                Err(TokenError::Malformed(msg)) => {
                    assert!(msg.contains(want), "{input:?}: {msg:?} lacks {want:?}")
                }
                other => panic!("{input:?}: expected Malformed, got {other:?}"),
            }
            assert!(matches!(
                decode_unverified(input),
                Err(TokenError::Malformed(_))
            ));
        }
        let long = format!("v4.public.{}", "A".repeat(MAX_TOKEN_LEN));
        assert!(matches!(
            k.check(&long, &Expect::default()),
            Err(TokenError::Malformed(_))
        ));
        // A footer that is not our JSON shape.
        let tok = k.issue(&binding(), DEFAULT_TTL).unwrap();
        let parts: Vec<&str> = tok.split('.').collect();
        for footer in [&b"not json"[..], br#"{"kid":"XYZ"}"#] {
            let t = format!("v4.public.{}.{}", parts[2], b64url(footer));
            assert!(matches!(
                k.check(&t, &Expect::default()),
                Err(TokenError::Malformed(_))
            ));
        }
    }

    #[test]
    fn key_file_modes_and_refusal() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let k = Keys::load_or_create(&dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(SECRET_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.join(PUBLIC_KEY_FILE)), 0o644);
        // No temporary files are left behind.
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        let secret = dir.join(SECRET_KEY_FILE);
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
        let e = Keys::load_or_create(&dir).unwrap_err();
        assert!(matches!(e, Error::Setup(_)), "{e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        // Fixed as told, the same key loads again.
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Keys::load_or_create(&dir).unwrap().kid(), k.kid());

        // A symlink in place of the key is refused.
        let link_dir = tmp.path().join("link");
        fs::create_dir(&link_dir).unwrap();
        std::os::unix::fs::symlink(&secret, link_dir.join(SECRET_KEY_FILE)).unwrap();
        let e = Keys::load_or_create(&link_dir).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");

        // Garbage in the key file is a clear setup error, not a new key.
        let junk_dir = tmp.path().join("junk");
        fs::create_dir(&junk_dir).unwrap();
        write_new_file(&junk_dir.join(SECRET_KEY_FILE), b"hello\n", 0o600).unwrap();
        let e = Keys::load_or_create(&junk_dir).unwrap_err();
        assert!(e.to_string().contains("k4.secret"), "{e}");

        // A public key file that belongs to another key is refused.
        let other = tempfile::tempdir().unwrap();
        Keys::load_or_create(other.path()).unwrap();
        fs::copy(
            other.path().join(PUBLIC_KEY_FILE),
            dir.join(PUBLIC_KEY_FILE),
        )
        .unwrap();
        let e = Keys::load_or_create(&dir).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        // Deleted, it is rewritten from the secret.
        fs::remove_file(dir.join(PUBLIC_KEY_FILE)).unwrap();
        assert_eq!(Keys::load_or_create(&dir).unwrap().kid(), k.kid());
        assert_eq!(mode(&dir.join(PUBLIC_KEY_FILE)), 0o644);
    }

    #[test]
    fn key_owned_by_another_user_is_refused() {
        // Only root can hand a file to another user.
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        Keys::load_or_create(tmp.path()).unwrap();
        let secret = tmp.path().join(SECRET_KEY_FILE);
        std::os::unix::fs::chown(&secret, Some(65534), None).unwrap();
        let e = Keys::load_or_create(tmp.path()).unwrap_err();
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        assert!(e.to_string().contains("chown"), "{e}");
    }

    #[test]
    fn concurrent_load_or_create_yields_one_key() {
        // Repeat to give the race a real chance to happen.
        for _ in 0..20 {
            let tmp = tempfile::tempdir().unwrap();
            let dir = Arc::new(tmp.path().join("keys"));
            let barrier = Arc::new(Barrier::new(4));
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let (dir, barrier) = (dir.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        Keys::load_or_create(&dir).unwrap().kid().to_string()
                    })
                })
                .collect();
            let kids: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            assert!(kids.iter().all(|k| k == &kids[0]), "{kids:?}");
            assert_eq!(Keys::load_or_create(&dir).unwrap().kid(), kids[0]);
            assert_eq!(fs::read_dir(&*dir).unwrap().count(), 2);
        }
    }

    /// Unpadded base64url, for forging footers in tests.
    fn b64url(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | ((b as u32) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}
