//! The scheduler policy repository: a persistent, versioned library of
//! schedulers with hybrid semantic search and evidence-based curation.
//!
//! [`Library`] is the service API the CLI, MCP and REST call. It owns the
//! rules — validation ([`validate`]), embedding ([`embed`]), rank fusion
//! ([`search`]), lifecycle ([`curation`]), export/import ([`transfer`]) —
//! and delegates storage to a [`repo::Repository`]: the embedded SQLite
//! store by default, PostgreSQL + pgvector for a fleet (config
//! `[policies] backend`).
//!
//! The built-in library ([`builtin`]) and the scx catalogue ([`catalog`])
//! are imported when the library opens: new entries are added, changed
//! ones get a new version, so an upgraded schedcp brings its new policies.

pub mod catalog;
pub mod curation;
pub mod embed;
pub mod external;
pub mod model;
pub mod quota;
pub mod repo;
pub mod search;
pub mod transfer;
pub mod validate;

use std::cell::OnceCell;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::bpf::{builtin, meta};
pub use crate::config::policies::{Backend, PoliciesConfig};
use crate::config::Config;
use crate::error::Error;
use embed::Embedder;
use model::{
    Body, History, NewPolicy, NewResult, NewVerifyReport, Origin, PolicyRef, PolicyResult,
    PolicySummary, PolicyVersion, SearchDoc, State, StoredVerifyReport, Transition,
};
pub use quota::{WriteLimits, Writer};
use repo::{Insert, Repository};
use search::{SearchQuery, SearchResults};
use transfer::{Export, ImportReport};

/// What [`Library::record_result`] did.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Recorded {
    pub result: PolicyResult,
    /// A promotion or demotion the result triggered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transition: Option<Transition>,
}

pub struct Library {
    repo: Box<dyn Repository>,
    model_dir: PathBuf,
    /// Loaded on first use: listing and showing need no model.
    embedder: OnceCell<Embedder>,
    min_improvements: usize,
    limits: WriteLimits,
}

/// Who writes: the operator (built-ins, the CLI, imports, admin tokens) or
/// an API token, which owns the policies it creates and has quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Author<'a> {
    Operator,
    /// The token's id.
    Token(&'a str),
}

impl<'a> Author<'a> {
    /// The token writing under `limits`; `None` for the operator.
    fn writer(self, limits: WriteLimits) -> Option<Writer<'a>> {
        match self {
            Author::Operator => None,
            Author::Token(t) => Some(Writer::new(t, limits)),
        }
    }
}

/// The configured backend, as is (no seeding, no model).
fn open_repo(cfg: &Config) -> Result<Box<dyn Repository>, Error> {
    Ok(match cfg.policies.backend {
        Backend::Sqlite => Box::new(repo::sqlite::SqliteRepo::new(crate::store::Store::open_in(
            &cfg.state_dir(),
        )?)),
        Backend::Postgres => Box::new(repo::postgres::PostgresRepo::connect(
            cfg.policies.postgres_url.as_deref().unwrap_or_default(),
        )?),
    })
}

/// The lifecycle state of `name@version` in the configured library, read
/// without seeding it or loading the embedding model (deploy admission
/// asks). `None`: the library does not know that version.
pub fn version_state(cfg: &Config, name: &str, version: u32) -> Result<Option<State>, Error> {
    let r = PolicyRef {
        name: name.to_string(),
        version: Some(version),
    };
    Ok(open_repo(cfg)?.get(&r)?.map(|v| v.state))
}

impl Library {
    /// Open the configured backend and import the built-in library and the
    /// scx catalogue where they are new or changed.
    pub fn open(cfg: &Config) -> Result<Library, Error> {
        let pc = &cfg.policies;
        let repo = open_repo(cfg)?;
        let model_dir = pc
            .model_dir
            .clone()
            .unwrap_or_else(|| embed::default_dir(&cfg.cache_dir()));
        let mut lib = Library::with_repo(repo, model_dir, pc.promotion_min_improvements);
        lib.limits = WriteLimits::of(pc);
        lib.seed()?;
        Ok(lib)
    }

    /// A library over `repo`, without seeding (tests, benchmarks).
    pub fn with_repo(
        repo: Box<dyn Repository>,
        model_dir: PathBuf,
        min_improvements: usize,
    ) -> Library {
        Library {
            repo,
            model_dir,
            embedder: OnceCell::new(),
            min_improvements,
            limits: WriteLimits::default(),
        }
    }

    /// Replace the write limits (tests; [`Library::open`] takes the config's).
    pub fn set_limits(&mut self, limits: WriteLimits) {
        self.limits = limits;
    }

    pub fn backend(&self) -> &'static str {
        self.repo.backend()
    }

    /// The embedder, loading it (and re-embedding the store if its vectors
    /// came from another model) on first use.
    fn embedder(&self) -> Result<&Embedder, Error> {
        if let Some(e) = self.embedder.get() {
            return Ok(e);
        }
        let e = Embedder::load(&self.model_dir)?;
        Ok(self.embedder.get_or_init(|| e))
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        embed_all(self.embedder()?, texts)
    }

    /// Re-embed everything if the stored vectors are from another model.
    fn ensure_index(&mut self) -> Result<(), Error> {
        let model = self.embedder()?.model_id().to_string();
        if self.repo.index_model()?.as_deref() == Some(model.as_str()) {
            return Ok(());
        }
        if self.repo.count()? > 0 {
            tracing::info!("re-embedding the policy library with {model}");
        }
        // The embedder is loaded by now; borrow it apart from the repository.
        let Library { repo, embedder, .. } = self;
        let embedder = embedder.get().expect("loaded above");
        repo.reindex(&model, &mut |texts: &[String]| embed_all(embedder, texts))
    }

    /// Import built-ins and the catalogue: what is new or changed.
    pub fn seed(&mut self) -> Result<Vec<PolicyVersion>, Error> {
        let mut todo: Vec<(NewPolicy, State, &'static str)> = Vec::new();
        let builtins = builtin::all().map_err(Error::Internal)?;
        for b in builtins {
            let p = NewPolicy {
                meta: b.meta,
                origin: Origin::Builtin,
                body: Body::Bpf {
                    source: b.source.to_string(),
                },
            };
            todo.push((p, State::Verified, "built-in: attaches and runs every lab workload in the sched_ext micro-VM (schedcp's CI)"));
        }
        for p in catalog::all().map_err(Error::Internal)? {
            todo.push((
                p,
                State::Candidate,
                "scx catalogue entry: not yet trialled on this machine",
            ));
        }
        let mut fresh = Vec::new();
        for (p, state, reason) in todo {
            let hash = p.content_hash();
            let known = self
                .repo
                .history(&p.meta.name)?
                .is_some_and(|h| h.versions.iter().any(|v| v.content_hash == hash));
            if !known {
                fresh.push((p, hash, state, reason));
            }
        }
        if fresh.is_empty() {
            return Ok(Vec::new());
        }
        self.ensure_index()?;
        let texts: Vec<String> = fresh
            .iter()
            .map(|(p, ..)| SearchDoc::new(&p.meta, &p.body).embedding_text())
            .collect();
        let vectors = self.embed(&texts)?;
        let items: Vec<Insert<'_>> = fresh
            .iter()
            .zip(vectors)
            .map(|((p, hash, state, reason), v)| Insert {
                policy: p,
                content_hash: hash.clone(),
                state: *state,
                reason: reason.to_string(),
                created_at: None,
                doc: SearchDoc::new(&p.meta, &p.body),
                embedding: v,
                added_by: None,
            })
            .collect();
        let added = self.repo.insert_versions(&items)?;
        tracing::info!("imported {} built-in/catalogue policies", added.len());
        Ok(added)
    }

    /// Add a policy (or a new version of one) as the operator. Agent-written
    /// policies enter as candidates, whatever they claim.
    pub fn add(&mut self, p: NewPolicy) -> Result<PolicyVersion, Error> {
        self.add_as(p, Author::Operator)
    }

    /// [`Library::add`] on behalf of `author`: a token may only add versions
    /// to policies it created, within its quotas.
    pub fn add_as(&mut self, p: NewPolicy, author: Author<'_>) -> Result<PolicyVersion, Error> {
        validate::new_policy(&p)?;
        // Checked here before any embedding, and again in the insert's
        // transaction, where concurrent calls of one token take turns.
        let writer = author.writer(self.limits);
        if let Some(w) = writer {
            w.admit_version(&self.repo.usage(w.token)?, p.stored_bytes())?;
        }
        self.ensure_index()?;
        let doc = SearchDoc::new(&p.meta, &p.body);
        let v = self.embed(&[doc.embedding_text()])?.remove(0);
        let item = Insert {
            policy: &p,
            content_hash: p.content_hash(),
            state: State::Candidate,
            reason: format!("added ({})", p.origin),
            created_at: None,
            doc,
            embedding: v,
            added_by: writer,
        };
        Ok(self.repo.insert_versions(&[item])?.remove(0))
    }

    pub fn get(&self, r: &PolicyRef) -> Result<PolicyVersion, Error> {
        self.repo.get(r)?.ok_or_else(|| self.unknown(r))
    }

    fn unknown(&self, r: &PolicyRef) -> Error {
        match (r.version, self.repo.get(&PolicyRef { name: r.name.clone(), version: None })) {
            (Some(v), Ok(Some(latest))) => Error::NotFound(format!(
                "policy '{}' has no version {v}; its latest is {}",
                r.name, latest.version
            )),
            _ => Error::NotFound(format!(
                "no policy named '{}'; `schedcp policy list` shows the library, `policy search` finds by description",
                r.name
            )),
        }
    }

    pub fn list(&self, state: Option<State>) -> Result<Vec<PolicySummary>, Error> {
        self.repo.list(state)
    }

    pub fn history(&self, name: &str) -> Result<History, Error> {
        self.repo.history(name)?.ok_or_else(|| {
            self.unknown(&PolicyRef {
                name: name.into(),
                version: None,
            })
        })
    }

    pub fn search(&mut self, q: &SearchQuery) -> Result<SearchResults, Error> {
        q.validate()?;
        self.ensure_index()?;
        let t0 = Instant::now();
        let v = self.embed(std::slice::from_ref(&q.text))?.remove(0);
        let embed_ms = t0.elapsed().as_secs_f64() * 1e3;
        search::run(self.repo.as_ref(), q, &v, embed_ms)
    }

    /// Search with an already computed query vector (benchmarks separate
    /// embedding time from retrieval this way).
    pub fn search_with_vector(&self, q: &SearchQuery, v: &[f32]) -> Result<SearchResults, Error> {
        q.validate()?;
        search::run(self.repo.as_ref(), q, v, 0.0)
    }

    /// The embedding model's id (loads it).
    pub fn model_id(&self) -> Result<&str, Error> {
        Ok(self.embedder()?.model_id())
    }

    /// The store's size on disk, where the backend knows it.
    pub fn store_bytes(&self) -> Option<u64> {
        self.repo.store_bytes()
    }

    /// Embed texts with the library's model.
    pub fn embed_texts(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        self.embed(texts)
    }

    /// Move a version along its lifecycle (see [`curation`]).
    pub fn transition(
        &mut self,
        r: &PolicyRef,
        to: State,
        reason: &str,
    ) -> Result<PolicyVersion, Error> {
        let v = self.get(r)?;
        curation::allowed(v.state, to).map_err(|e| Error::Input(format!("{}: {e}", v.id())))?;
        if reason.trim().is_empty() || reason.len() > 500 {
            return Err(Error::Input(
                "a transition needs a reason of 1..=500 characters".into(),
            ));
        }
        if !self
            .repo
            .transition(&v.name, v.version, v.state, to, reason)?
        {
            return Err(Error::Input(format!(
                "{} changed state while this request ran; look at `schedcp policy history {}` and retry",
                v.id(),
                v.name
            )));
        }
        self.get(&PolicyRef {
            name: v.name,
            version: Some(v.version),
        })
    }

    /// Keep a verification report with its version. A passing report moves
    /// a candidate to `verified`; the transition's reason names the report.
    pub fn record_verify_report(
        &mut self,
        r: &PolicyRef,
        report: &NewVerifyReport,
    ) -> Result<(StoredVerifyReport, Option<PolicyVersion>), Error> {
        let v = self.get(r)?;
        let stored = self.repo.insert_verify_report(
            &v.name,
            v.version,
            report,
            self.limits.keep_verify_reports,
        )?;
        let mut moved = None;
        if report.passed && v.state == State::Candidate {
            let reason = format!(
                "schedcp verify passed (report #{}, sha256 {})",
                stored.id,
                &report.report_sha256[..16.min(report.report_sha256.len())]
            );
            moved = Some(self.transition(
                &PolicyRef {
                    name: v.name.clone(),
                    version: Some(v.version),
                },
                State::Verified,
                &reason,
            )?);
        }
        Ok((stored, moved))
    }

    /// Kept verification reports of a version (the latest version when
    /// `r.version` is `None`), newest first.
    pub fn verify_reports(
        &self,
        r: &PolicyRef,
        limit: usize,
    ) -> Result<Vec<StoredVerifyReport>, Error> {
        let v = self.get(r)?;
        self.repo
            .verify_reports(&v.name, v.version, limit.clamp(1, 100))
    }

    /// Append a measured result as the operator; promote or demote if the
    /// rules say so.
    pub fn record_result(&mut self, r: &PolicyRef, res: NewResult) -> Result<Recorded, Error> {
        self.record_result_as(r, res, Author::Operator)
    }

    /// [`Library::record_result`] on behalf of `author`, within its quota.
    pub fn record_result_as(
        &mut self,
        r: &PolicyRef,
        mut res: NewResult,
        author: Author<'_>,
    ) -> Result<Recorded, Error> {
        validate_result(&mut res)?;
        let v = self.get(r)?;
        let writer = author.writer(self.limits);
        if let Some(wr) = writer {
            wr.admit_result(&self.repo.usage(wr.token)?)?;
        }
        self.ensure_index()?;
        let w = self.embed(&[res.workload_description.clone()])?.remove(0);
        let result = self
            .repo
            .insert_result(&v.name, v.version, &res, &w, writer)?;
        let mut transition = None;
        let results: Vec<PolicyResult> = self
            .history(&v.name)?
            .results
            .into_iter()
            .filter(|x| x.version == v.version)
            .collect();
        if let Some((to, reason)) = curation::after_result(v.state, &results, self.min_improvements)
        {
            if self
                .repo
                .transition(&v.name, v.version, v.state, to, &reason)?
            {
                tracing::info!("{}: {reason}", v.id());
                transition = Some(Transition {
                    version: v.version,
                    from: Some(v.state),
                    to,
                    reason,
                    at: repo::now(),
                });
            }
        }
        Ok(Recorded { result, transition })
    }

    pub fn export(&self) -> Result<Export, Error> {
        let mut policies = Vec::new();
        for s in self.repo.list(None)? {
            policies.push(self.history(&s.name)?);
        }
        Ok(Export {
            format: transfer::FORMAT.into(),
            format_version: transfer::FORMAT_VERSION,
            exported_at: repo::now(),
            policies,
        })
    }

    /// Import an export: versions not yet here are appended (content hashes
    /// checked first, nothing written if any is wrong), with their state
    /// and results.
    pub fn import(&mut self, e: &Export, from: &str) -> Result<ImportReport, Error> {
        if e.format != transfer::FORMAT || e.format_version != transfer::FORMAT_VERSION {
            return Err(Error::Input(format!(
                "not a schedcp policy library (format '{}' version {}; expected '{}' version {})",
                e.format,
                e.format_version,
                transfer::FORMAT,
                transfer::FORMAT_VERSION
            )));
        }
        let mut todo: Vec<(NewPolicy, &PolicyVersion)> = Vec::new();
        let mut report = ImportReport::default();
        for h in &e.policies {
            for v in &h.versions {
                if v.name != h.name {
                    return Err(Error::Input(format!(
                        "version {} is filed under policy '{}'",
                        v.id(),
                        h.name
                    )));
                }
                let p = NewPolicy {
                    meta: v.meta.clone(),
                    origin: v.origin,
                    body: v.body.clone(),
                };
                validate::new_policy(&p)
                    .map_err(|err| Error::Input(format!("{}: {err}", v.id())))?;
                let hash = p.content_hash();
                if hash != v.content_hash {
                    return Err(Error::Input(format!(
                        "{}: content does not match its hash (file says {}, content is {}): the file was edited or corrupted; nothing imported",
                        v.id(),
                        &v.content_hash[..12.min(v.content_hash.len())],
                        &hash[..12]
                    )));
                }
                let here = self.repo.history(&h.name)?;
                if here
                    .as_ref()
                    .is_some_and(|x| x.versions.iter().any(|y| y.content_hash == hash))
                {
                    report.unchanged.push(v.id());
                } else {
                    todo.push((p, v));
                }
            }
        }
        if !todo.is_empty() {
            self.ensure_index()?;
            let texts: Vec<String> = todo
                .iter()
                .map(|(p, _)| SearchDoc::new(&p.meta, &p.body).embedding_text())
                .collect();
            let vectors = self.embed(&texts)?;
            let items: Vec<Insert<'_>> = todo
                .iter()
                .zip(vectors)
                .map(|((p, v), vec)| Insert {
                    policy: p,
                    content_hash: v.content_hash.clone(),
                    state: v.state,
                    reason: format!("imported from {from} (was {} there)", v.id()),
                    created_at: Some(v.created_at.clone()),
                    doc: SearchDoc::new(&p.meta, &p.body),
                    embedding: vec,
                    added_by: None,
                })
                .collect();
            let added = self.repo.insert_versions(&items)?;
            for ((_, old), new) in todo.iter().zip(&added) {
                report.added.push((old.id(), new.id()));
            }
        }
        // Results of the versions just added, re-pointed at their new numbers.
        for h in &e.policies {
            for r in &h.results {
                let old = format!("{}@{}", h.name, r.version);
                let Some((_, new)) = report.added.iter().find(|(o, _)| *o == old) else {
                    continue;
                };
                let new_ref: PolicyRef = new.parse().map_err(Error::Input)?;
                let mut res = r.result.clone();
                res.environment = format!("{} (recorded {})", res.environment, r.recorded_at);
                let w = self.embed(&[res.workload_description.clone()])?.remove(0);
                self.repo.insert_result(
                    &new_ref.name,
                    new_ref.version.unwrap_or(1),
                    &res,
                    &w,
                    None,
                )?;
                report.results += 1;
            }
        }
        Ok(report)
    }
}

/// Embed `texts`; the embedder batches them by length itself.
fn embed_all(e: &Embedder, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    e.embed(&refs)
}

/// Bounds and consistency of a result to record; fills what can be derived.
fn validate_result(r: &mut NewResult) -> Result<(), Error> {
    let bad = |m: String| Err(Error::Input(m));
    // A result's workload is a profile's name (or a built-in workload's).
    crate::observe::workload_profiles::validate_name(&r.workload)?;
    if r.workload_description.trim().is_empty() {
        r.workload_description = r.workload.replace('_', " ");
    }
    if r.workload_description.chars().count() > 500 {
        return bad("the workload description is over 500 characters".into());
    }
    if !meta::is_identifier(&r.metric) || r.unit.is_empty() || r.unit.len() > 16 {
        return bad("metric must be an identifier (e.g. makespan, p99_latency) and unit 1..=16 characters (e.g. ms, ops/s)".into());
    }
    if !r.value.is_finite() || r.baseline.is_some_and(|b| !b.is_finite()) {
        return bad("value and baseline must be finite numbers".into());
    }
    if let Some(p) = r.p_value {
        if !(0.0..=1.0).contains(&p) {
            return bad(format!("p-value {p} is not in 0..=1"));
        }
    }
    if r.environment.len() > 200 {
        return bad("environment is over 200 characters".into());
    }
    if r.improvement_pct.is_none() {
        if let Some(b) = r.baseline.filter(|b| *b != 0.0) {
            let change = (r.value - b) / b.abs() * 100.0;
            r.improvement_pct = Some(match r.direction {
                model::Direction::Lower => -change,
                model::Direction::Higher => change,
            });
        }
    }
    let consistent = match r.verdict {
        model::ResultVerdict::Improved => {
            r.significant && r.improvement_pct.is_none_or(|p| p > 0.0)
        }
        model::ResultVerdict::Regressed => {
            r.significant && r.improvement_pct.is_none_or(|p| p < 0.0)
        }
        model::ResultVerdict::NoChange => !r.significant,
    };
    if !consistent {
        return bad(format!(
            "verdict {} contradicts significant={} and improvement {:?}%: improved/regressed need a significant change in that direction, no_change needs an insignificant one",
            r.verdict, r.significant, r.improvement_pct
        ));
    }
    Ok(())
}
