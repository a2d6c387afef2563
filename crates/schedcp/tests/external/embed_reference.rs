//! The candle embedder against reference vectors from an independent numpy
//! implementation (scripts/reference_embeddings.py, fixture in
//! tests/data/minilm_reference.json), on the real all-MiniLM-L6-v2 weights.
//!
//! Needs the model in the cache (`scripts/fetch-model.sh`, run by
//! `scripts/setup.sh`); without it this test fails rather than skips, so a
//! machine that lost the model cannot pass silently.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use schedcp::config::Config;
use schedcp::policies::embed::{self, Embedder, DIM};

struct Reference {
    texts: Vec<String>,
    vectors: Vec<Vec<f32>>,
    /// (a, b, c): a is closer to b than to c.
    similar_over_unrelated: Vec<[usize; 3]>,
}

fn reference() -> Reference {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/minilm_reference.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let sentences = doc["sentences"].as_array().unwrap();
    let texts = sentences
        .iter()
        .map(|s| s["text"].as_str().unwrap().to_owned())
        .collect();
    let vectors = sentences
        .iter()
        .map(|s| serde_json::from_value(s["vector"].clone()).unwrap())
        .collect();
    let similar_over_unrelated =
        serde_json::from_value(doc["similar_over_unrelated"].clone()).unwrap();
    Reference {
        texts,
        vectors,
        similar_over_unrelated,
    }
}

fn load() -> Embedder {
    let dir = embed::default_dir(&Config::default().cache_dir());
    match Embedder::load(&dir) {
        Ok(e) => e,
        Err(e) => panic!(
            "the embedding model is required for this test \
             (run scripts/fetch-model.sh): {e}"
        ),
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn norm(a: &[f32]) -> f64 {
    a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

#[test]
fn matches_reference_singly_and_batched() {
    let r = reference();
    let t = Instant::now();
    let embedder = load();
    eprintln!("load: {:?}, model id {}", t.elapsed(), embedder.model_id());
    assert!(embedder.model_id().starts_with("all-MiniLM-L6-v2@"));

    let texts: Vec<&str> = r.texts.iter().map(String::as_str).collect();
    let single: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| embedder.embed(&[t]).unwrap().pop().unwrap())
        .collect();
    let t = Instant::now();
    let batch = embedder.embed(&texts).unwrap();
    eprintln!("batch of {}: {:?}", texts.len(), t.elapsed());
    assert_eq!(batch.len(), texts.len());

    for (i, text) in texts.iter().enumerate() {
        let (s, b, want) = (&single[i], &batch[i], &r.vectors[i]);
        assert_eq!(s.len(), DIM);
        assert_eq!(b.len(), DIM);
        let (cs, cb, csb) = (cosine(s, want), cosine(b, want), cosine(s, b));
        let short: String = text.chars().take(40).collect();
        eprintln!(
            "1-cos vs reference: single {:.1e} batched {:.1e}; single vs batched {:.1e}  {short:?}",
            1.0 - cs,
            1.0 - cb,
            1.0 - csb
        );
        assert!(cs > 0.999, "single {i}: cosine {cs} vs reference");
        assert!(cb > 0.999, "batched {i}: cosine {cb} vs reference");
        // Padding inside a batch must not change a vector beyond float noise.
        assert!(csb > 0.99999, "{i}: single vs batched cosine {csb}");
        assert!((norm(s) - 1.0).abs() < 1e-4, "{i}: norm {}", norm(s));
        assert!((norm(b) - 1.0).abs() < 1e-4, "{i}: norm {}", norm(b));
    }

    // Meaning, not just numbers: related scheduler texts are closer than unrelated ones.
    for [a, b, c] in r.similar_over_unrelated {
        let (near, far) = (cosine(&batch[a], &batch[b]), cosine(&batch[a], &batch[c]));
        assert!(
            near > far + 0.2,
            "cos({a},{b})={near} should clearly exceed cos({a},{c})={far}"
        );
    }
}

#[test]
fn empty_input_and_query_timing() {
    let embedder = load();
    assert!(embedder.embed(&[]).unwrap().is_empty());

    let queries = [
        "low latency scheduler",
        "interactive desktop",
        "gaming frame pacing",
        "batch throughput",
        "NUMA aware placement",
        "energy efficient scheduling on laptops",
        "fair share between cgroups",
        "reduce tail latency for web servers",
        "EEVDF",
        "real-time audio",
    ];
    // Warm-up: first call pays one-off allocation costs.
    embedder.embed(&[queries[0]]).unwrap();
    let times: Vec<Duration> = (0..50)
        .map(|i| {
            let t = Instant::now();
            let v = embedder.embed(&[queries[i % queries.len()]]).unwrap();
            let d = t.elapsed();
            assert_eq!(v[0].len(), DIM);
            d
        })
        .collect();
    eprintln!(
        "single short query: median {:?}, max {:?} over {} runs",
        median(times.clone()),
        times.iter().max().unwrap(),
        times.len()
    );
    let t = Instant::now();
    embedder.embed(&queries).unwrap();
    eprintln!(
        "batch of {} short queries: {:?}",
        queries.len(),
        t.elapsed()
    );
}
