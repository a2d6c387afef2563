//! What one API token may store in the policy library (issue 17,
//! finding 6): the limits, the usage they are checked against, and the
//! refusals.
//!
//! [`super::Library`] checks a write before it embeds anything, so an
//! over-quota call costs no model time. The backend checks again inside the
//! insert's transaction after serialising the token's writers (SQLite: its
//! immediate transaction; PostgreSQL: an advisory lock per token), so
//! concurrent calls of one token cannot overshoot. Both use [`Writer`].

use crate::error::Error;

/// Bounds on what one API token may store, and how many verify reports
/// are kept per version ([policies] in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteLimits {
    pub quota_versions: u64,
    pub quota_bytes: u64,
    pub quota_results: u64,
    pub keep_verify_reports: usize,
}

impl WriteLimits {
    pub fn of(pc: &crate::config::policies::PoliciesConfig) -> WriteLimits {
        WriteLimits {
            quota_versions: pc.quota_versions,
            quota_bytes: pc.quota_mib << 20,
            quota_results: pc.quota_results,
            keep_verify_reports: pc.keep_verify_reports,
        }
    }
}

impl Default for WriteLimits {
    fn default() -> Self {
        WriteLimits::of(&Default::default())
    }
}

/// What one API token has added and recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub versions: u64,
    /// Metadata and source of those versions, as stored.
    pub bytes: u64,
    pub results: u64,
}

/// An API token writing, with the limits its writes must fit. The
/// operator (built-ins, the CLI, imports, admin tokens) writes without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Writer<'a> {
    /// The token's id, recorded as the owner and adder.
    pub token: &'a str,
    pub limits: WriteLimits,
}

impl<'a> Writer<'a> {
    pub fn new(token: &'a str, limits: WriteLimits) -> Writer<'a> {
        Writer { token, limits }
    }

    /// May a version of `bytes` stored bytes be added on top of `used`?
    pub fn admit_version(&self, used: &Usage, bytes: u64) -> Result<(), Error> {
        let (token, l) = (self.token, &self.limits);
        if used.versions >= l.quota_versions {
            return Err(Error::Quota(format!(
                "token {token} has added {} policy versions, its quota ([policies] \
                 quota_versions = {}); an admin can raise it",
                used.versions, l.quota_versions
            )));
        }
        if used.bytes.saturating_add(bytes) > l.quota_bytes {
            return Err(Error::Quota(format!(
                "this version needs {bytes} bytes and token {token} has stored {} of its \
                 {} ([policies] quota_mib = {}); an admin can raise it",
                used.bytes,
                l.quota_bytes,
                l.quota_bytes >> 20
            )));
        }
        Ok(())
    }

    /// May one more result be recorded on top of `used`?
    pub fn admit_result(&self, used: &Usage) -> Result<(), Error> {
        if used.results >= self.limits.quota_results {
            return Err(Error::Quota(format!(
                "token {} has recorded {} results, its quota ([policies] \
                 quota_results = {}); an admin can raise it",
                self.token, used.results, self.limits.quota_results
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> WriteLimits {
        WriteLimits {
            quota_versions: 2,
            quota_bytes: 100,
            quota_results: 1,
            keep_verify_reports: 8,
        }
    }

    #[test]
    fn refusals_name_the_setting_and_the_usage() {
        let w = Writer::new("tok", limits());
        let used = Usage {
            versions: 1,
            bytes: 60,
            results: 0,
        };
        w.admit_version(&used, 40).unwrap();
        let e = w.admit_version(&used, 41).unwrap_err().to_string();
        assert!(
            e.contains("needs 41 bytes") && e.contains("quota_mib"),
            "{e}"
        );
        let full = Usage {
            versions: 2,
            ..used
        };
        let e = w.admit_version(&full, 1).unwrap_err().to_string();
        assert!(
            e.contains("added 2 policy versions") && e.contains("quota_versions = 2"),
            "{e}"
        );
        w.admit_result(&used).unwrap();
        let e = w
            .admit_result(&Usage { results: 1, ..used })
            .unwrap_err()
            .to_string();
        assert!(e.contains("quota_results = 1"), "{e}");
    }
}
