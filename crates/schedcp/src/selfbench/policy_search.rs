//! Policy search: latency at 100, 1k and 10k policies on each backend
//! (query embedding timed apart), and quality on a labelled query set
//! against plain substring matching.
//!
//! The corpus is the shipped library plus synthetic policies whose
//! descriptions combine real scheduling vocabulary (algorithm families,
//! target workloads, placement features); every one is embedded for real.
//! Each size is a fresh store holding the first N of the same corpus.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bpf::builtin;
use crate::bpf::meta::PolicyMeta;
use crate::error::Error;
use crate::policies::model::{Body, NewPolicy, Origin, SearchDoc, State};
use crate::policies::repo::{Insert, Repository};
use crate::policies::search::{self, SearchQuery};
use crate::policies::{catalog, Library};

/// The target: p99 under this at 10k policies on the embedded store,
/// excluding the query embedding.
pub const TARGET_P99_MS: f64 = 10.0;

const QUERIES: &str = include_str!("policy_queries.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct LabelledQuery {
    pub text: String,
    pub expect: Vec<String>,
}

#[derive(Deserialize)]
struct QueryFile {
    query: Vec<LabelledQuery>,
}

pub fn labelled_queries() -> Vec<LabelledQuery> {
    toml::from_str::<QueryFile>(QUERIES)
        .expect("policy_queries.toml parses (checked by tests)")
        .query
}

/// Makes an empty repository for one measurement.
pub type RepoFactory<'a> = dyn FnMut(&str) -> Result<Box<dyn Repository>, Error> + 'a;

pub struct Config {
    pub cache_dir: PathBuf,
    pub sizes: Vec<usize>,
    /// Searches per size (the query set, repeated).
    pub searches: usize,
    pub model_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub backend: String,
    pub policies: usize,
    pub searches: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Same, with a state filter (candidate).
    pub filtered_p50_ms: f64,
    pub filtered_p99_ms: f64,
    /// Of the exact 50 nearest policies (brute force over the same
    /// vectors), the share the backend's vector search returned: the cost
    /// of its index (quantisation, HNSW) in recall.
    pub vector_recall_at_50: f64,
    /// The same for the exact 10 nearest among its first 10.
    pub vector_recall_at_10: f64,
    /// Median time per stage of the unfiltered searches, ms.
    pub stage_p50_ms: crate::policies::search::StageMs,
    /// The same for the state-filtered searches.
    pub filtered_stage_p50_ms: crate::policies::search::StageMs,
    /// The vector stage alone against the store's own KNN, where the
    /// backend answers from a separate index (SQLite: flat copy vs vec0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knn_peer: Option<KnnPeer>,
    /// Building the store (inserts and indexes), seconds.
    pub load_s: f64,
    /// On-disk size (SQLite only), bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_bytes: Option<u64>,
}

/// KNN latency of the query path's index against the store's native KNN,
/// the same queries alternating between the two in one run.
#[derive(Debug, Clone, Serialize)]
pub struct KnnPeer {
    pub k: usize,
    pub index_p50_ms: f64,
    pub index_p99_ms: f64,
    pub native_p50_ms: f64,
    pub native_p99_ms: f64,
    /// index p50 / native p50.
    pub ratio_p50: f64,
    /// Share of the native top-k the index also returned (exact both: 1.0).
    pub agreement: f64,
    /// The first search after a write: reading the index in, plus the scan.
    pub cold_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Quality {
    pub method: String,
    pub queries: usize,
    pub top1: usize,
    pub top3: usize,
    pub misses: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    /// Per query embedding, ms.
    pub embed_p50_ms: f64,
    pub embed_p99_ms: f64,
    /// Embedding the corpus, texts per second (batches of 32); `None`
    /// when the vectors came from the benchmark's cache.
    pub corpus_embed_per_s: Option<f64>,
    pub latency: Vec<Latency>,
    pub quality: Vec<Quality>,
    pub target_p99_ms: f64,
}

/// Nearest-rank percentile of sorted values.
/// The `q` quantile, NaN for no values (reports print it as such).
fn percentile(values: &[f64], q: f64) -> f64 {
    crate::compare::stats::quantile(values, q).unwrap_or(f64::NAN)
}

/// The library schedcp ships: built-ins and the scx catalogue.
pub fn shipped() -> anyhow::Result<Vec<NewPolicy>> {
    let mut out: Vec<NewPolicy> = builtin::all()?
        .into_iter()
        .map(|b| NewPolicy {
            meta: b.meta,
            origin: Origin::Builtin,
            body: Body::Bpf {
                source: b.source.to_string(),
            },
        })
        .collect();
    out.extend(catalog::all()?);
    Ok(out)
}

/// The shipped library followed by synthetic policies, `n` in all (never
/// fewer than the shipped library).
pub fn corpus(n: usize) -> anyhow::Result<Vec<NewPolicy>> {
    let mut out = shipped()?;
    const ALGOS: &[(&str, &str)] = &[
        ("FIFO queue", "tasks wait in one queue in arrival order"),
        (
            "weighted vruntime",
            "tasks are ordered by virtual runtime scaled by weight",
        ),
        (
            "earliest deadline first",
            "each task gets a virtual deadline from its slice and wait time",
        ),
        (
            "shortest job first",
            "tasks with the shortest observed bursts run first",
        ),
        ("round robin", "each task runs for a fixed slice in turn"),
        ("lottery", "tickets proportional to weight decide who runs"),
        (
            "multi-level feedback queue",
            "tasks move between priority levels by how they use their slice",
        ),
        (
            "per-LLC queues",
            "each last-level cache has its own queue, balanced periodically",
        ),
    ];
    const TARGETS: &[(&str, &str)] = &[
        ("interactive", "interactive desktops"),
        ("batch", "batch throughput"),
        ("server", "web servers"),
        ("server", "databases"),
        ("gaming", "games"),
        ("multimedia", "audio and video"),
        ("throughput", "HPC"),
        ("containers", "container hosts"),
        ("throughput", "build farms"),
        ("batch", "machine learning training"),
    ];
    const FEATURES: &[&str] = &[
        "a wakeup boost for tasks that sleep often",
        "cache-aware placement on the previous CPU",
        "NUMA balancing between nodes",
        "a preference for fully idle cores",
        "slices that shrink as load grows",
        "cgroup weights",
        "aging so that nothing starves",
        "frequency hints for the CPU governor",
    ];
    let mut i = 0usize;
    while out.len() < n {
        let (algo, how) = ALGOS[i % ALGOS.len()];
        let (tag, target) = TARGETS[(i / ALGOS.len()) % TARGETS.len()];
        let feature = FEATURES[(i / (ALGOS.len() * TARGETS.len())) % FEATURES.len()];
        let slice = 500 + (i * 37) % 20_000;
        let meta = PolicyMeta {
            name: format!("syn_{i}"),
            ops_name: format!("syn_{i}"),
            description: format!(
                "A {algo} scheduler for {target}, with {feature}; default slice {slice} us."
            ),
            algorithm: format!("{how}. It adds {feature}. Variant {i}."),
            target_workloads: vec![tag.to_string()],
            limitations: vec![format!("Synthetic benchmark policy {i}.")],
            tunables: Vec::new(),
        };
        out.push(NewPolicy {
            meta,
            origin: Origin::Agent,
            body: Body::Bpf {
                source: format!(
                    "/* synthetic {i} */ SCX_OPS_DEFINE(syn_{i}_ops, .name = \"syn_{i}\");"
                ),
            },
        });
        i += 1;
    }
    Ok(out)
}

/// Substring matching: the peer a plain `grep` over names and
/// descriptions would give. Score = query words found; ties by name.
pub fn substring_rank(lib: &[NewPolicy], query: &str) -> Vec<String> {
    let words = search::terms(query);
    let mut scored: Vec<(usize, &str)> = lib
        .iter()
        .map(|p| {
            let hay = format!("{} {}", p.meta.name, p.meta.description).to_lowercase();
            (
                words.iter().filter(|w| hay.contains(w.as_str())).count(),
                p.meta.name.as_str(),
            )
        })
        .filter(|(s, _)| *s > 0)
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.into_iter().map(|(_, n)| n.to_string()).collect()
}

fn score_quality(method: &str, queries: &[LabelledQuery], ranked: &[Vec<String>]) -> Quality {
    let mut q = Quality {
        method: method.into(),
        queries: queries.len(),
        top1: 0,
        top3: 0,
        misses: Vec::new(),
    };
    for (lq, r) in queries.iter().zip(ranked) {
        let hit = |n: &String| lq.expect.contains(n);
        if r.first().is_some_and(hit) {
            q.top1 += 1;
        }
        if r.iter().take(3).any(hit) {
            q.top3 += 1;
        } else {
            q.misses.push(format!(
                "{:?} → {:?}",
                lq.text,
                r.iter().take(3).collect::<Vec<_>>()
            ));
        }
    }
    q
}

pub fn run(
    cfg: &Config,
    backends: &mut [(&str, Box<RepoFactory<'_>>)],
    progress: &mut dyn FnMut(&str),
) -> Result<Report, Error> {
    let max = cfg.sizes.iter().copied().max().unwrap_or(0);
    let corpus = corpus(max.max(1)).map_err(Error::Internal)?;
    let queries = labelled_queries();

    // One library only to embed with (its repository is never used for search).
    let embed_lib = Library::with_repo(
        (backends[0].1)("embedder")?,
        cfg.model_dir.clone(),
        crate::policies::curation::DEFAULT_MIN_IMPROVEMENTS,
    );
    // Load the model first: its load time is not a query's.
    embed_lib.model_id()?;
    // Query embedding time, one query at a time as a search would.
    let mut qvecs = Vec::new();
    let mut embed_ms = Vec::new();
    for _ in 0..3 {
        qvecs.clear();
        for q in &queries {
            let t = Instant::now();
            qvecs.push(
                embed_lib
                    .embed_texts(std::slice::from_ref(&q.text))?
                    .remove(0),
            );
            embed_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    embed_ms.sort_by(f64::total_cmp);

    let docs: Vec<SearchDoc> = corpus
        .iter()
        .map(|p| SearchDoc::new(&p.meta, &p.body))
        .collect();
    let model = embed_lib.model_id()?.to_string();
    // Embedding 10k texts takes minutes on two cores; the vectors depend only
    // on the model and the texts, so reruns reuse them.
    let texts: Vec<String> = docs.iter().map(SearchDoc::embedding_text).collect();
    let cache = cfg.cache_dir.join("bench").join(format!(
        "policy-corpus-{}.f32",
        hex::encode(&Sha256::digest(format!("{model}\n{}", texts.join("\n")))[..8])
    ));
    let t = Instant::now();
    let (vectors, corpus_embed_per_s) = match read_vectors(&cache, texts.len()) {
        Some(v) => (v, None),
        None => {
            let mut vectors = Vec::with_capacity(texts.len());
            for chunk in texts.chunks(256) {
                progress(&format!(
                    "embedding the corpus: {}/{}",
                    vectors.len(),
                    texts.len()
                ));
                vectors.extend(embed_lib.embed_texts(chunk)?);
            }
            let rate = texts.len() as f64 / t.elapsed().as_secs_f64();
            write_vectors(&cache, &vectors);
            (vectors, Some(rate))
        }
    };
    let mut latency = Vec::new();
    let mut quality = Vec::new();
    for (backend, factory) in backends.iter_mut() {
        for &n in &cfg.sizes {
            progress(&format!("{backend}: loading {n} policies"));
            let mut repo = factory(&format!("n{n}"))?;
            let t = Instant::now();
            let mut reindex_noop =
                |_: &[String]| -> Result<Vec<Vec<f32>>, Error> { Ok(Vec::new()) };
            repo.reindex(&model, &mut reindex_noop)?;
            for start in (0..n).step_by(500) {
                let end = (start + 500).min(n);
                let items: Vec<Insert<'_>> = (start..end)
                    .map(|i| Insert {
                        policy: &corpus[i],
                        content_hash: corpus[i].content_hash(),
                        state: if i % 3 == 0 {
                            State::Candidate
                        } else {
                            State::Verified
                        },
                        reason: "benchmark".into(),
                        created_at: None,
                        doc: docs[i].clone(),
                        embedding: vectors[i].clone(),
                        added_by: None,
                    })
                    .collect();
                repo.insert_versions(&items)?;
            }
            let load_s = t.elapsed().as_secs_f64();
            let (vector_recall_at_50, vector_recall_at_10) =
                recall(repo.as_ref(), &corpus[..n], &vectors[..n], &qvecs)?;
            let knn_peer = knn_peer(repo.as_ref(), &qvecs, cfg.searches)?;
            let lib = Library::with_repo(repo, cfg.model_dir.clone(), 2);
            progress(&format!(
                "{backend}: {} searches over {n} policies",
                cfg.searches
            ));
            let time = |state: Option<State>| -> Result<(Vec<f64>, Vec<search::StageMs>), Error> {
                let mut ms = Vec::with_capacity(cfg.searches);
                let mut stages = Vec::with_capacity(cfg.searches);
                for i in 0..cfg.searches {
                    let q = SearchQuery {
                        text: queries[i % queries.len()].text.clone(),
                        limit: 5,
                        state,
                    };
                    let t = Instant::now();
                    let r = lib.search_with_vector(&q, &qvecs[i % queries.len()])?;
                    ms.push(t.elapsed().as_secs_f64() * 1e3);
                    stages.push(r.stage_ms);
                }
                ms.sort_by(f64::total_cmp);
                Ok((ms, stages))
            };
            // One warm-up pass so that both backends start with warm caches.
            time(None)?;
            let (all, stages) = time(None)?;
            let (filtered, filtered_stages) = time(Some(State::Candidate))?;
            let medians = |stages: &[search::StageMs]| {
                let med = |f: fn(&search::StageMs) -> f64| {
                    let mut v: Vec<f64> = stages.iter().map(f).collect();
                    v.sort_by(f64::total_cmp);
                    percentile(&v, 0.5)
                };
                search::StageMs {
                    vector: med(|s| s.vector),
                    text: med(|s| s.text),
                    evidence: med(|s| s.evidence),
                    fuse: med(|s| s.fuse),
                }
            };
            let stage_p50_ms = medians(&stages);
            let filtered_stage_p50_ms = medians(&filtered_stages);
            latency.push(Latency {
                backend: backend.to_string(),
                policies: n,
                searches: cfg.searches,
                p50_ms: percentile(&all, 0.5),
                p99_ms: percentile(&all, 0.99),
                max_ms: *all.last().unwrap_or(&0.0),
                filtered_p50_ms: percentile(&filtered, 0.5),
                filtered_p99_ms: percentile(&filtered, 0.99),
                vector_recall_at_50,
                vector_recall_at_10,
                stage_p50_ms,
                filtered_stage_p50_ms,
                knn_peer,
                load_s,
                store_bytes: lib.store_bytes(),
            });
        }
        // Quality on the shipped library alone.
        let shipped = corpus
            .iter()
            .take_while(|p| p.origin != Origin::Agent)
            .count();
        let mut repo = factory("quality")?;
        let mut noop = |_: &[String]| -> Result<Vec<Vec<f32>>, Error> { Ok(Vec::new()) };
        repo.reindex(&model, &mut noop)?;
        let items: Vec<Insert<'_>> = (0..shipped)
            .map(|i| Insert {
                policy: &corpus[i],
                content_hash: corpus[i].content_hash(),
                state: State::Verified,
                reason: "benchmark".into(),
                created_at: None,
                doc: docs[i].clone(),
                embedding: vectors[i].clone(),
                added_by: None,
            })
            .collect();
        repo.insert_versions(&items)?;
        let lib = Library::with_repo(repo, cfg.model_dir.clone(), 2);
        let mut ranked = Vec::new();
        for (q, v) in queries.iter().zip(&qvecs) {
            let r = lib.search_with_vector(
                &SearchQuery {
                    text: q.text.clone(),
                    limit: 5,
                    state: None,
                },
                v,
            )?;
            ranked.push(r.hits.into_iter().map(|h| h.name).collect::<Vec<_>>());
        }
        quality.push(score_quality(
            &format!("hybrid ({backend})"),
            &queries,
            &ranked,
        ));
    }
    let shipped: Vec<NewPolicy> = corpus
        .iter()
        .take_while(|p| p.origin != Origin::Agent)
        .cloned()
        .collect();
    let ranked: Vec<Vec<String>> = queries
        .iter()
        .map(|q| substring_rank(&shipped, &q.text))
        .collect();
    quality.push(score_quality("substring", &queries, &ranked));

    Ok(Report {
        model,
        embed_p50_ms: percentile(&embed_ms, 0.5),
        embed_p99_ms: percentile(&embed_ms, 0.99),
        corpus_embed_per_s,
        latency,
        quality,
        target_p99_ms: TARGET_P99_MS,
    })
}

/// `repo.vector_search` against `repo.native_vector_search`, alternating.
fn knn_peer(
    repo: &dyn Repository,
    queries: &[Vec<f32>],
    searches: usize,
) -> Result<Option<KnnPeer>, Error> {
    let k = search::CANDIDATES;
    let (mut index, mut native) = (Vec::new(), Vec::new());
    let (mut same, mut total) = (0usize, 0usize);
    // The first call after the inserts reads the index in: a cold search.
    let t = Instant::now();
    repo.vector_search(&queries[0], None, k)?;
    let cold_ms = t.elapsed().as_secs_f64() * 1e3;
    if repo.native_vector_search(&queries[0], None, k).is_none() {
        return Ok(None);
    }
    for i in 0..searches {
        let q = &queries[i % queries.len()];
        let t = Instant::now();
        let a = repo.vector_search(q, None, k)?;
        index.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let b = repo
            .native_vector_search(q, None, k)
            .expect("checked above")?;
        native.push(t.elapsed().as_secs_f64() * 1e3);
        total += b.len();
        same += b
            .iter()
            .filter(|h| a.iter().any(|x| x.name == h.name))
            .count();
    }
    index.sort_by(f64::total_cmp);
    native.sort_by(f64::total_cmp);
    let (i50, n50) = (percentile(&index, 0.5), percentile(&native, 0.5));
    Ok(Some(KnnPeer {
        k,
        index_p50_ms: i50,
        index_p99_ms: percentile(&index, 0.99),
        native_p50_ms: n50,
        native_p99_ms: percentile(&native, 0.99),
        ratio_p50: i50 / n50.max(1e-9),
        cold_ms,
        agreement: same as f64 / total.max(1) as f64,
    }))
}

/// Recall of `repo.vector_search` against an exact scan, at 50 and at 10.
fn recall(
    repo: &dyn Repository,
    corpus: &[NewPolicy],
    vectors: &[Vec<f32>],
    queries: &[Vec<f32>],
) -> Result<(f64, f64), Error> {
    let (mut hit50, mut hit10, mut n50, mut n10) = (0usize, 0usize, 0usize, 0usize);
    for q in queries {
        let mut exact: Vec<(f64, &str)> = vectors
            .iter()
            .zip(corpus)
            .map(|(v, p)| (search::cosine(q, v), p.meta.name.as_str()))
            .collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        let got: Vec<String> = repo
            .vector_search(q, None, 50)?
            .into_iter()
            .map(|h| h.name)
            .collect();
        for (i, (_, name)) in exact.iter().take(50).enumerate() {
            n50 += 1;
            if got.iter().any(|g| g == name) {
                hit50 += 1;
            }
            if i < 10 {
                n10 += 1;
                if got.iter().take(10).any(|g| g == name) {
                    hit10 += 1;
                }
            }
        }
    }
    Ok((
        hit50 as f64 / n50.max(1) as f64,
        hit10 as f64 / n10.max(1) as f64,
    ))
}

fn read_vectors(path: &std::path::Path, n: usize) -> Option<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).ok()?;
    let dim = crate::policies::embed::DIM;
    (bytes.len() == n * dim * 4).then(|| {
        bytes
            .chunks_exact(dim * 4)
            .map(crate::policies::repo::sqlite::blob_vec)
            .collect()
    })
}

fn write_vectors(path: &std::path::Path, vectors: &[Vec<f32>]) {
    let bytes: Vec<u8> = vectors
        .iter()
        .flat_map(|v| crate::policies::repo::sqlite::vec_blob(v))
        .collect();
    let written = path
        .parent()
        .map(std::fs::create_dir_all)
        .transpose()
        .and_then(|_| std::fs::write(path, bytes));
    if let Err(e) = written {
        tracing::warn!(
            "could not cache the benchmark corpus vectors at {}: {e}",
            path.display()
        );
    }
}

impl Report {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "policy search ({}); query embedding p50 {:.1} ms, p99 {:.1} ms; corpus embedding {}",
            self.model,
            self.embed_p50_ms,
            self.embed_p99_ms,
            self.corpus_embed_per_s
                .map_or("cached".to_string(), |r| format!("{r:.0} texts/s"))
        );
        let _ = writeln!(
            s,
            "{:<9} {:>8} {:>9} {:>9} {:>9} {:>12} {:>12} {:>8} {:>10}",
            "backend",
            "policies",
            "p50 ms",
            "p99 ms",
            "max ms",
            "state p50",
            "state p99",
            "load s",
            "store"
        );
        for l in &self.latency {
            let _ = writeln!(
                s,
                "{:<9} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>12.2} {:>12.2} {:>8.1} {:>10}",
                l.backend,
                l.policies,
                l.p50_ms,
                l.p99_ms,
                l.max_ms,
                l.filtered_p50_ms,
                l.filtered_p99_ms,
                l.load_s,
                l.store_bytes
                    .map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
            );
        }
        for l in &self.latency {
            let st = &l.stage_p50_ms;
            let _ = writeln!(
                s,
                "  {} {:>6}: median stages vector {:.2} ms, text {:.2} ms, evidence {:.2} ms, fuse {:.2} ms; vector recall@10 {:.2}, @50 {:.2}",
                l.backend, l.policies, st.vector, st.text, st.evidence, st.fuse,
                l.vector_recall_at_10, l.vector_recall_at_50
            );
            let f = &l.filtered_stage_p50_ms;
            let _ = writeln!(
                s,
                "  {} {:>6}: median stages with a state filter: vector {:.2} ms, text {:.2} ms, evidence {:.2} ms, fuse {:.2} ms",
                l.backend, l.policies, f.vector, f.text, f.evidence, f.fuse
            );
            if let Some(k) = &l.knn_peer {
                let _ = writeln!(
                    s,
                    "  {} {:>6}: KNN (k={}) flat index p50 {:.2} / p99 {:.2} ms vs vec0 p50 {:.2} / p99 {:.2} ms: ratio {:.2}, same top-k {:.3}; first search after a write {:.1} ms (reads the index)",
                    l.backend, l.policies, k.k, k.index_p50_ms, k.index_p99_ms,
                    k.native_p50_ms, k.native_p99_ms, k.ratio_p50, k.agreement, k.cold_ms
                );
            }
        }
        if let Some(l) = self
            .latency
            .iter()
            .filter(|l| l.backend == "sqlite")
            .max_by_key(|l| l.policies)
        {
            let _ = writeln!(
                s,
                "target: p99 < {} ms at the largest size on sqlite ({}): {}",
                self.target_p99_ms,
                l.policies,
                if l.p99_ms < self.target_p99_ms {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
        let _ = writeln!(
            s,
            "quality on {} labelled queries:",
            self.quality.first().map_or(0, |q| q.queries)
        );
        for q in &self.quality {
            let _ = writeln!(
                s,
                "  {:<18} top-1 {:>2}/{}  top-3 {:>2}/{}",
                q.method, q.top1, q.queries, q.top3, q.queries
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_queries_name_real_policies() {
        let names: Vec<String> = shipped()
            .unwrap()
            .iter()
            .map(|p| p.meta.name.clone())
            .collect();
        let qs = labelled_queries();
        assert!(qs.len() >= 20);
        for q in qs {
            for e in &q.expect {
                assert!(names.contains(e), "{e} in {:?}", q.text);
            }
        }
    }

    #[test]
    fn synthetic_policies_are_valid_and_distinct() {
        let c = corpus(500).unwrap();
        assert_eq!(c.len(), 500);
        let mut hashes: Vec<String> = c.iter().map(NewPolicy::content_hash).collect();
        let mut names: Vec<&str> = c.iter().map(|p| p.meta.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 500);
        hashes.sort();
        hashes.dedup();
        assert_eq!(hashes.len(), 500);
        for p in &c {
            crate::policies::validate::new_policy(p).unwrap();
        }
    }
}
