//! Hybrid search: three rankings fused by reciprocal rank fusion (RRF).
//!
//! 1. **Semantic**: cosine similarity between the query's embedding and
//!    each policy's (all-MiniLM-L6-v2), nearest first.
//! 2. **Lexical**: full text over name, description, algorithm, targets,
//!    limitations and tunables (BM25 on SQLite, `ts_rank_cd` on
//!    PostgreSQL).
//! 3. **Evidence**: measured results. The query is compared with every
//!    workload results were recorded on; on each workload at least
//!    [`WORKLOAD_SIMILARITY`] similar, a significant improvement counts
//!    +similarity and a significant regression −similarity. Policies with a
//!    positive sum are ranked by it.
//!
//! RRF score = Σ over rankings of `weight / (K + rank)`, rank from 1, with
//! [`K`] = 60 (the constant of Cormack et al., which keeps one list's top
//! hit from dominating). RRF needs only ranks, so the scales of BM25,
//! `ts_rank_cd` and cosine never have to be reconciled. Policies whose
//! evidence sum is negative lose `EVIDENCE_WEIGHT / (K + rank)` by the same
//! rule, ranked by how bad it is: a policy that regressed on workloads like
//! the query sinks.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

use super::model::{Kind, Origin, ResultVerdict, State};
use super::repo::{DocRow, Evidence, Repository};
use crate::error::Error;

pub const K: f64 = 60.0;
pub const SEMANTIC_WEIGHT: f64 = 1.0;
pub const LEXICAL_WEIGHT: f64 = 1.0;
pub const EVIDENCE_WEIGHT: f64 = 1.0;
/// How similar a recorded workload must be to the query for its results to count.
pub const WORKLOAD_SIMILARITY: f64 = 0.45;
/// Candidates taken from each ranking before fusion.
pub const CANDIDATES: usize = 50;
pub const MAX_LIMIT: usize = 50;
pub const MAX_QUERY_CHARS: usize = 1_000;

#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub text: String,
    pub limit: usize,
    pub state: Option<State>,
}

impl SearchQuery {
    pub fn validate(&self) -> Result<(), Error> {
        if self.text.trim().is_empty() {
            return Err(Error::Input(
                "the search query is empty; describe the workload or scheduler you want, e.g. \"low latency for interactive desktop\"".into(),
            ));
        }
        if self.text.chars().count() > MAX_QUERY_CHARS {
            return Err(Error::Input(format!(
                "the search query is {} characters; at most {MAX_QUERY_CHARS}",
                self.text.chars().count()
            )));
        }
        if !(1..=MAX_LIMIT).contains(&self.limit) {
            return Err(Error::Input(format!(
                "limit must be 1..={MAX_LIMIT}, got {}",
                self.limit
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SearchHit {
    pub rank: usize,
    pub name: String,
    pub version: u32,
    pub kind: Kind,
    pub origin: Origin,
    pub state: State,
    /// Fused RRF score (higher is better; comparable within one search).
    pub score: f64,
    /// Cosine similarity to the query, when among the semantic candidates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f64>,
    /// Lexical score, when among the text candidates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_score: Option<f64>,
    /// Fields the query's words occur in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matched_fields: Vec<&'static str>,
    /// Measured results on workloads like the query.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    /// One line: why this hit ranks here.
    pub reason: String,
    pub description: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize, schemars::JsonSchema)]
pub struct StageMs {
    pub vector: f64,
    pub text: f64,
    pub evidence: f64,
    pub fuse: f64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SearchResults {
    pub query: String,
    pub backend: &'static str,
    /// Embedding the query, in ms.
    pub embed_ms: f64,
    /// Retrieval and fusion, in ms (excludes embedding).
    pub search_ms: f64,
    /// Where search_ms went: vector, text, evidence, and fusion with fetching the hits.
    pub stage_ms: StageMs,
    pub hits: Vec<SearchHit>,
}

const STOPWORDS: &[&str] = &[
    "a",
    "an",
    "and",
    "are",
    "as",
    "at",
    "be",
    "by",
    "for",
    "from",
    "in",
    "is",
    "it",
    "of",
    "on",
    "or",
    "that",
    "the",
    "to",
    "with",
    "we",
    "i",
    "my",
    "our",
    "me",
    "want",
    "need",
    "which",
    "what",
    "good",
    "best",
    "scheduler",
    "schedulers",
    "policy",
    "should",
    "can",
];

/// The query's words for full-text search: lower-cased alphanumeric runs,
/// stop words dropped. Nothing of the query's own syntax survives.
pub fn terms(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() >= 2)
        .map(str::to_lowercase)
    {
        if !STOPWORDS.contains(&w.as_str()) && !out.contains(&w) {
            out.push(w);
        }
        if out.len() == 32 {
            break;
        }
    }
    out
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    // Both sides are L2-normalised by the embedder.
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

#[derive(Default)]
struct Candidate {
    score: f64,
    similarity: Option<f64>,
    text_score: Option<f64>,
    evidence: Vec<String>,
    parts: Vec<String>,
}

fn add<'a>(
    cands: &'a mut HashMap<String, Candidate>,
    name: &str,
    rank: usize,
    weight: f64,
) -> &'a mut Candidate {
    let c = cands.entry(name.to_string()).or_default();
    c.score += weight / (K + rank as f64);
    c
}

fn evidence_line(e: &Evidence, sim: f64) -> String {
    let what = match (e.verdict, e.improvement_pct) {
        (ResultVerdict::Improved, Some(p)) => format!("improved {} by {:.1}%", e.metric, p.abs()),
        (ResultVerdict::Regressed, Some(p)) => format!("regressed {} by {:.1}%", e.metric, p.abs()),
        (v, _) => format!("{v} on {}", e.metric),
    };
    let p = e.p_value.map(|p| format!(", p={p:.3}")).unwrap_or_default();
    format!("{what} on '{}' (similarity {sim:.2}{p})", e.workload)
}

/// Run `q` against `repo`, with `query_vec` the query's embedding.
pub fn run(
    repo: &dyn Repository,
    q: &SearchQuery,
    query_vec: &[f32],
    embed_ms: f64,
) -> Result<SearchResults, Error> {
    let t0 = Instant::now();
    let mut stage = StageMs::default();
    let lap = |t: &mut Instant| {
        let ms = t.elapsed().as_secs_f64() * 1e3;
        *t = Instant::now();
        ms
    };
    let mut t = Instant::now();
    let mut cands: HashMap<String, Candidate> = HashMap::new();

    for (i, h) in repo
        .vector_search(query_vec, q.state, CANDIDATES)?
        .iter()
        .enumerate()
    {
        let c = add(&mut cands, &h.name, i + 1, SEMANTIC_WEIGHT);
        c.similarity = Some(h.score);
        c.parts
            .push(format!("semantic #{} ({:.2})", i + 1, h.score));
    }
    stage.vector = lap(&mut t);
    let words = terms(&q.text);
    for (i, h) in repo
        .text_search(&words, q.state, CANDIDATES)?
        .iter()
        .enumerate()
    {
        let c = add(&mut cands, &h.name, i + 1, LEXICAL_WEIGHT);
        c.text_score = Some(h.score);
        c.parts.push(format!("text #{}", i + 1));
    }

    stage.text = lap(&mut t);
    // Evidence: results on workloads similar to the query.
    let sims: HashMap<i64, f64> = repo
        .workloads()?
        .into_iter()
        .map(|w| (w.id, cosine(query_vec, &w.embedding)))
        .filter(|(_, s)| *s >= WORKLOAD_SIMILARITY)
        .collect();
    let ids: Vec<i64> = sims.keys().copied().collect();
    let mut sums: HashMap<String, (f64, Vec<String>)> = HashMap::new();
    for e in repo.evidence(&ids, q.state)? {
        let sim = sims[&e.workload_id];
        let sign = if e.verdict == ResultVerdict::Improved {
            1.0
        } else {
            -1.0
        };
        let s = sums.entry(e.name.clone()).or_default();
        s.0 += sign * sim;
        s.1.push(evidence_line(&e, sim));
    }
    let mut ranked: Vec<(String, f64, Vec<String>)> =
        sums.into_iter().map(|(n, (s, l))| (n, s, l)).collect();
    ranked.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then_with(|| a.0.cmp(&b.0)));
    let (mut good, mut bad) = (0, 0);
    for (name, sum, lines) in ranked {
        let (rank, weight) = if sum > 0.0 {
            good += 1;
            (good, EVIDENCE_WEIGHT)
        } else if sum < 0.0 {
            bad += 1;
            (bad, -EVIDENCE_WEIGHT)
        } else {
            continue;
        };
        // A policy known only for regressions is not a hit.
        if weight < 0.0 && !cands.contains_key(&name) {
            continue;
        }
        let c = add(&mut cands, &name, rank, weight);
        c.evidence = lines;
        c.parts.push(if sum > 0.0 {
            format!("evidence #{rank} (+{sum:.2})")
        } else {
            format!("regressions ({sum:.2})")
        });
    }

    stage.evidence = lap(&mut t);
    let mut order: Vec<(String, Candidate)> = cands.into_iter().collect();
    order.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then_with(|| a.0.cmp(&b.0)));
    order.truncate(q.limit);
    let names: Vec<String> = order.iter().map(|(n, _)| n.clone()).collect();
    let docs: HashMap<String, DocRow> = repo
        .docs(&names)?
        .into_iter()
        .map(|d| (d.summary.name.clone(), d))
        .collect();
    let mut hits = Vec::with_capacity(order.len());
    for (name, c) in order {
        let Some(d) = docs.get(&name) else { continue };
        let matched_fields: Vec<&'static str> = d
            .doc
            .fields()
            .into_iter()
            .filter(|(_, text)| {
                // Word prefixes, so "interactive" finds "interactivity" but "in" finds nothing.
                let text = text.to_lowercase();
                text.split(|c: char| !c.is_alphanumeric()).any(|tw| {
                    words
                        .iter()
                        .any(|w| w.len() >= 3 && tw.starts_with(w.as_str()))
                })
            })
            .map(|(f, _)| f)
            .collect();
        let mut reason = c.parts.join(", ");
        if !matched_fields.is_empty() {
            reason.push_str(&format!("; words in {}", matched_fields.join(", ")));
        }
        if let Some(first) = c.evidence.first() {
            reason.push_str(&format!("; {first}"));
        }
        hits.push(SearchHit {
            rank: hits.len() + 1,
            name,
            version: d.summary.version,
            kind: d.summary.kind,
            origin: d.summary.origin,
            state: d.summary.state,
            score: c.score,
            similarity: c.similarity,
            text_score: c.text_score,
            matched_fields,
            evidence: c.evidence,
            reason,
            description: d.summary.description.clone(),
        });
    }
    Ok(SearchResults {
        query: q.text.clone(),
        backend: repo.backend(),
        embed_ms,
        search_ms: t0.elapsed().as_secs_f64() * 1e3,
        stage_ms: StageMs {
            fuse: lap(&mut t),
            ..stage
        },
        hits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_drop_syntax_and_stopwords() {
        assert_eq!(
            terms("Low-latency \"scheduler\" for games* OR NEAR(x) a:b"),
            vec!["low", "latency", "games", "near"]
        );
        assert!(terms("the a of").is_empty());
    }

    #[test]
    fn queries_are_bounded() {
        let q = |text: &str, limit| SearchQuery {
            text: text.into(),
            limit,
            state: None,
        };
        assert!(q("x", 5).validate().is_ok());
        assert!(q("  ", 5)
            .validate()
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(q("x", 0)
            .validate()
            .unwrap_err()
            .to_string()
            .contains("1..=50"));
        assert!(q(&"x".repeat(1001), 5).validate().is_err());
    }
}
