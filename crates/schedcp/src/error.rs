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
    /// The caller asked for something invalid (unknown name, bad value, missing file).
    #[error("{0}")]
    Input(String),
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
            Error::Input(_) => exit::USAGE,
            Error::Setup(_) => exit::SETUP,
            Error::Compile(_) => exit::SCHEDULER,
            Error::Internal(_) => exit::FAILURE,
        }
    }
}
