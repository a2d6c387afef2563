//! Storage backends of the policy repository, behind one trait.
//!
//! - [`sqlite`]: the embedded default — tables in schedcp's one SQLite
//!   file, FTS5 (BM25) for text and a sqlite-vec `vec0` table for vectors.
//! - [`postgres`]: fleet mode — PostgreSQL with pgvector for vectors and
//!   `tsvector` full text.
//!
//! Backends store and retrieve; they decide nothing. Validation, embedding,
//! rank fusion and curation live in [`super::Library`], once, for both.
//! Every method that writes does so in one transaction.

pub mod flat;
pub mod postgres;
pub mod sqlite;

use super::model::{
    History, NewPolicy, NewResult, NewVerifyReport, PolicyRef, PolicyResult, PolicySummary,
    PolicyVersion, ResultVerdict, SearchDoc, State, StoredVerifyReport,
};
pub use super::quota::Usage;
use super::quota::Writer;
use crate::error::Error;

/// One version to insert, with what search needs about it.
pub struct Insert<'a> {
    pub policy: &'a NewPolicy,
    pub content_hash: String,
    pub state: State,
    /// Why it enters in `state` (recorded as its first transition).
    pub reason: String,
    /// `None`: now.
    pub created_at: Option<String>,
    pub doc: SearchDoc,
    pub embedding: Vec<f32>,
    /// The API token adding it; `None` for the operator. A new policy is
    /// owned by its first version's adder, and a token may only add
    /// versions to a policy it owns, within its quotas. Both are checked
    /// in the insert's transaction, with the token's writers serialised, so
    /// two tokens racing for one new name cannot share it and one token's
    /// concurrent calls cannot overshoot its quota.
    pub added_by: Option<Writer<'a>>,
}

/// The refusal when `by` adds to a policy owned by someone else.
pub(crate) fn not_owner(name: &str, owner: Option<&str>, by: &str) -> Error {
    let whose = match owner {
        Some(o) => format!("API token {o}"),
        None => "the operator".to_string(),
    };
    Error::Forbidden(format!(
        "policy '{name}' belongs to {whose}; token {by} may only add versions to policies it \
         created: add yours under a new name, or ask an admin"
    ))
}

/// Embeds texts for [`Repository::reindex`].
pub type EmbedFn<'a> = dyn FnMut(&[String]) -> Result<Vec<Vec<f32>>, Error> + 'a;

/// A ranked candidate from one retriever.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub name: String,
    /// Retriever-specific: BM25 (higher = better) or cosine similarity.
    pub score: f64,
}

/// A workload that results were recorded on, with its embedding.
#[derive(Debug, Clone)]
pub struct Workload {
    pub id: i64,
    pub text: String,
    pub embedding: Vec<f32>,
}

/// One significant result on a workload, for search's evidence ranking.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub name: String,
    pub workload_id: i64,
    pub workload: String,
    pub metric: String,
    pub verdict: ResultVerdict,
    pub improvement_pct: Option<f64>,
    pub p_value: Option<f64>,
}

/// The latest version's summary and text of a policy, for presenting hits.
#[derive(Debug, Clone)]
pub struct DocRow {
    pub summary: PolicySummary,
    pub doc: SearchDoc,
}

pub trait Repository: Send {
    /// "sqlite" or "postgres", for reports.
    fn backend(&self) -> &'static str;

    /// Insert versions in one transaction; each creates its policy if new.
    /// A version whose content hash equals an existing version of the same
    /// policy is refused (nothing of the batch is written).
    fn insert_versions(&mut self, items: &[Insert<'_>]) -> Result<Vec<PolicyVersion>, Error>;

    /// A version (the latest when `r.version` is `None`).
    fn get(&self, r: &PolicyRef) -> Result<Option<PolicyVersion>, Error>;

    /// Every policy's latest version, by name.
    fn list(&self, state: Option<State>) -> Result<Vec<PolicySummary>, Error>;

    fn history(&self, name: &str) -> Result<Option<History>, Error>;

    /// Move `name@version` from `from` to `to`, atomically: fails with
    /// `Ok(false)` if it is no longer in `from` (someone else moved it).
    fn transition(
        &mut self,
        name: &str,
        version: u32,
        from: State,
        to: State,
        reason: &str,
    ) -> Result<bool, Error>;

    /// Append a result; `workload_embedding` embeds `r.workload_description`;
    /// `recorded_by` is the API token, `None` for the operator. The token's
    /// result quota is checked in the same transaction, as for versions.
    fn insert_result(
        &mut self,
        name: &str,
        version: u32,
        r: &NewResult,
        workload_embedding: &[f32],
        recorded_by: Option<Writer<'_>>,
    ) -> Result<PolicyResult, Error>;

    /// Keep a verification report of `name@version`, and of its older ones
    /// only the newest `keep` and the newest that passed (one transaction).
    fn insert_verify_report(
        &mut self,
        name: &str,
        version: u32,
        r: &NewVerifyReport,
        keep: usize,
    ) -> Result<StoredVerifyReport, Error>;

    /// What API token `by` has added and recorded.
    fn usage(&self, by: &str) -> Result<Usage, Error>;

    /// The kept reports of `name@version`, newest first, at most `limit`.
    fn verify_reports(
        &self,
        name: &str,
        version: u32,
        limit: usize,
    ) -> Result<Vec<StoredVerifyReport>, Error>;

    /// Full-text candidates for `terms` (already lower-cased words), best
    /// first, at most `k`.
    fn text_search(
        &self,
        terms: &[String],
        state: Option<State>,
        k: usize,
    ) -> Result<Vec<Hit>, Error>;

    /// Nearest policies to `query` by cosine similarity, best first.
    fn vector_search(
        &self,
        query: &[f32],
        state: Option<State>,
        k: usize,
    ) -> Result<Vec<Hit>, Error>;

    /// The vector store's own KNN, where the backend answers
    /// [`Self::vector_search`] from elsewhere (for the benchmark's peer).
    fn native_vector_search(
        &self,
        _query: &[f32],
        _state: Option<State>,
        _k: usize,
    ) -> Option<Result<Vec<Hit>, Error>> {
        None
    }

    /// Every workload results were recorded on.
    fn workloads(&self) -> Result<Vec<Workload>, Error>;

    /// Significant results (improved or regressed) on these workloads.
    fn evidence(&self, workload_ids: &[i64], state: Option<State>) -> Result<Vec<Evidence>, Error>;

    /// Summaries and search text of these policies' latest versions.
    fn docs(&self, names: &[String]) -> Result<Vec<DocRow>, Error>;

    /// The embedding model the stored vectors came from.
    fn index_model(&self) -> Result<Option<String>, Error>;

    /// Replace every stored vector (policies and workloads) by `embed`'s,
    /// and record `model` as their source. One transaction.
    fn reindex(&mut self, model: &str, embed: &mut EmbedFn<'_>) -> Result<(), Error>;

    /// How many policies are stored.
    fn count(&self) -> Result<usize, Error>;

    /// Bytes the store occupies, where that is meaningful (one file).
    fn store_bytes(&self) -> Option<u64> {
        None
    }
}

/// A stored timestamp for "now": RFC 3339 UTC with milliseconds.
pub use crate::host::now_rfc3339 as now;

/// An internal storage error with what was being done.
pub(crate) fn db_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(anyhow::anyhow!("policy store: {what}: {e}"))
}

/// A result's signature as stored (JSON text), or none.
pub(crate) fn signature_json(
    r: &crate::policies::model::NewResult,
) -> Result<Option<String>, Error> {
    r.signature
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| Error::Internal(e.into()))
}

/// A stored signature; one this schedcp cannot read (another version's
/// shape) is left out rather than failing the whole history.
pub(crate) fn signature_from_json(
    text: Option<String>,
) -> Option<crate::observe::signature::Signature> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}
