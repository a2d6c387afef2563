//! Admission: nothing reaches the kernel unless its token checks out for
//! this exact object, on this kernel, on a machine that has sched_ext.
//! Checks run in the order token → object → sched_ext → kernel release, so
//! the first refusal is the most useful one.

use std::path::Path;

use sha2::{Digest, Sha256};

use schedcp_scx::Artefact;

use super::{decode_object, DeployConfig, MAX_BINARY_BYTES, MAX_OBJECT_BYTES};
use crate::config::Config;
use crate::error::Error;
use crate::policies::model::State;
use crate::store::Store;
use crate::verify::pipeline::object_store;
use crate::verify::token::{self, Claims, Expect, Keys, TrustedKey};

/// A request that passed every check.
#[derive(Debug)]
pub struct Admitted {
    pub claims: Claims,
    /// The token itself, kept with the deployment: a re-attach checks it
    /// again ([`readmit`]).
    pub token: String,
    pub object: Vec<u8>,
    /// A BPF object we load, or a scheduler binary we supervise.
    pub artefact: Artefact,
    pub object_sha256: String,
    pub kernel_release: String,
}

/// Check `token` (and the object it must match) for deployment here.
pub fn admit(cfg: &Config, token: &str, object_b64: Option<&str>) -> Result<Admitted, Error> {
    let keys = Keys::load_or_create(&cfg.state_dir())?;
    let trusted = trusted_keys(&cfg.deploy)?;
    // Signature, key and expiry first: an unverified token tells us nothing
    // worth acting on, not even where to find the object.
    let claims = token::check_trusted(token, &Expect::default(), Some(&keys), &trusted)?;
    check_not_revoked(cfg, &claims.jti)?;
    check_not_retired(cfg, &claims)?;
    if !claims.sched_ext {
        return Err(Error::Input(format!(
            "token for {}@{} was issued without a sched_ext attach test (the verifying kernel had no sched_ext); verify it in the lab first",
            claims.policy, claims.version
        )));
    }
    let object = match object_b64 {
        Some(b64) => decode_object(b64)?,
        None => read_kept_object(&object_store(cfg), &claims.object_sha256)?,
    };
    let artefact = Artefact::of(&object).ok_or_else(|| {
        Error::Input(
            "the object is neither a BPF object (ELF, EM_BPF) nor an x86-64 scheduler binary"
                .into(),
        )
    })?;
    let limit = match artefact {
        Artefact::BpfObject => MAX_OBJECT_BYTES,
        Artefact::Executable => MAX_BINARY_BYTES,
    };
    if object.len() > limit {
        return Err(Error::Input(format!(
            "the object is {} bytes; at most {limit} are accepted",
            object.len()
        )));
    }
    let object_sha256 = hex::encode(Sha256::digest(&object));
    let kernel_release = crate::host::kernel_release();
    if !schedcp_scx::sysfs::available() {
        return Err(Error::Setup(format!(
            "this kernel ({kernel_release}) has no sched_ext (/sys/kernel/sched_ext is missing): \
             it was built without CONFIG_SCHED_CLASS_EXT, so no BPF scheduler can attach here. \
             Deploy on a kernel with sched_ext (6.12 or newer, built with it), or use \
             `schedcp lab node` to run a sched_ext machine in a micro-VM"
        )));
    }
    // Now the bindings: this object, this kernel.
    token::check_trusted(
        token,
        &Expect {
            object_sha256: Some(object_sha256.clone()),
            kernel_release: Some(kernel_release.clone()),
        },
        Some(&keys),
        &trusted,
    )?;
    Ok(Admitted {
        claims,
        token: token.to_string(),
        object,
        artefact,
        object_sha256,
        kernel_release,
    })
}

/// May a scheduler that was admitted once go back on without a canary (a
/// daemon restart, a reboot, a rollback to it as the last known-good)?
/// Only if admission would take it now: the same kernel release it was
/// admitted on, and its token unexpired, signed by a key this node still
/// trusts, for this object on this kernel. The reason says what to do.
pub fn readmit(
    cfg: &Config,
    admitted_on: &str,
    object_sha256: &str,
    token: Option<&str>,
) -> Result<(), Error> {
    let kernel = crate::host::kernel_release();
    if admitted_on != kernel {
        return Err(Error::Input(format!(
            "it was admitted on kernel {admitted_on} and this is {kernel}: verify it again on this kernel and deploy it with a canary"
        )));
    }
    let token = token.ok_or_else(|| {
        Error::Input(
            "its deploy token was not kept (deployed by an older schedcp): verify it again and deploy it with a canary".into(),
        )
    })?;
    let keys = Keys::load_or_create(&cfg.state_dir())?;
    let trusted = trusted_keys(&cfg.deploy)?;
    token::check_trusted(
        token,
        &Expect {
            object_sha256: Some(object_sha256.to_string()),
            kernel_release: Some(kernel),
        },
        Some(&keys),
        &trusted,
    )
    .map_err(|e| e.to_string())
    .and_then(|claims| {
        check_not_revoked(cfg, &claims.jti)
            .and_then(|()| check_not_retired(cfg, &claims))
            .map_err(|e| e.to_string())
    })
    .map_err(|e| {
        Error::Input(format!(
            "its deploy token no longer checks out ({e}): verify it again and deploy it with a canary"
        ))
    })
}

/// A token stays valid until it expires, but the version it was issued for
/// may be retired meanwhile (found wanting, superseded): then it is not
/// deployed. A version this node's library does not know (a token from
/// another machine, an ad-hoc file) has no state here to consult.
fn check_not_retired(cfg: &Config, claims: &Claims) -> Result<(), Error> {
    if claims.version == 0 {
        return Ok(());
    }
    match crate::policies::version_state(cfg, &claims.policy, claims.version)? {
        Some(State::Retired) => Err(Error::Input(format!(
            "{}@{} has been retired since its token was issued; deploy a version that is not retired",
            claims.policy, claims.version
        ))),
        _ => Ok(()),
    }
}

/// Revoke the deploy token with id `jti` on this node: admission and every
/// re-attach refuse it from now on. Idempotent (the first reason stays).
pub fn revoke(store: &mut Store, jti: &str, reason: &str) -> Result<(), Error> {
    if jti.len() != 32 || !jti.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Input(format!(
            "'{}' is not a deploy token id (32 hex digits; `schedcp verify token-check` shows a token's jti)",
            jti.chars().take(64).collect::<String>()
        )));
    }
    let reason = reason.trim();
    if reason.is_empty() || reason.len() > 500 {
        return Err(Error::Input("the reason must be 1..=500 characters".into()));
    }
    store.write(|tx| {
        tx.execute(
            "INSERT INTO revoked_deploy_tokens (jti, reason, revoked_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (jti) DO NOTHING",
            rusqlite::params![jti.to_ascii_lowercase(), reason, crate::host::now_rfc3339()],
        )
        .map(|_| ())
        .map_err(|e| Error::Internal(anyhow::anyhow!("revoking a deploy token: {e}")))
    })
}

fn check_not_revoked(cfg: &Config, jti: &str) -> Result<(), Error> {
    let store = Store::open_in(&cfg.state_dir())?;
    let revoked: Option<(String, String)> = store
        .conn()
        .query_row(
            "SELECT reason, revoked_at FROM revoked_deploy_tokens WHERE jti = ?1",
            [jti],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok();
    match revoked {
        Some((reason, at)) => Err(Error::Input(format!(
            "deploy token {jti} was revoked at {at} ({reason}); verify the policy again for a new token"
        ))),
        None => Ok(()),
    }
}

pub fn trusted_keys(cfg: &DeployConfig) -> Result<Vec<TrustedKey>, Error> {
    cfg.trusted_keys
        .iter()
        .map(|k| TrustedKey::from_paserk(k))
        .collect()
}

fn read_kept_object(store: &Path, sha256: &str) -> Result<Vec<u8>, Error> {
    // The verifier keeps BPF objects as .bpf.o and scheduler binaries as .bin.
    let binary = store.join(format!("{sha256}.bin"));
    if binary.is_file() {
        return std::fs::read(&binary)
            .map_err(|e| Error::Input(format!("reading {}: {e}", binary.display())));
    }
    let path = store.join(format!("{sha256}.bpf.o"));
    std::fs::read(&path).map_err(|e| {
        Error::Input(format!(
            "no object given and none kept for this token ({}: {e}); pass the verified object \
             (--object FILE, or object_base64 in the API)",
            path.display()
        ))
    })
}
