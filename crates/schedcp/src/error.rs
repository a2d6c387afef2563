//! The error kinds every entry point maps to an exit code.

/// Exit codes (documented in `schedcp --help`).
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const SETUP: i32 = 3;
    pub const SCHEDULER: i32 = 4;
    pub const TIMEOUT: i32 = 5;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller asked for something invalid (bad value, missing file).
    #[error("{0}")]
    Input(String),
    /// The caller named something that does not exist (a policy, version,
    /// profile, run): a usage error on the CLI, 404 on REST.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this: another agent's policy, say. 403 on REST.
    #[error("{0}")]
    Forbidden(String),
    /// The caller has used up a quota (versions, bytes, results): 403
    /// `quota_exceeded` on REST; the message names the setting.
    #[error("{0}")]
    Quota(String),
    /// Something schedcp needs is not installed or cached; the message says how to fix it.
    #[error("{0}")]
    Setup(String),
    /// The scheduler source does not compile.
    #[error("{0}")]
    Compile(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) | Error::NotFound(_) | Error::Forbidden(_) | Error::Quota(_) => {
                exit::USAGE
            }
            Error::Setup(_) => exit::SETUP,
            Error::Compile(_) => exit::SCHEDULER,
            Error::Internal(_) => exit::FAILURE,
        }
    }
}
