//! Token counting for LLM-facing output. Counts real cl100k_base tokens (the
//! encoding of the GPT-4 family, a close proxy for other models' tokenizers)
//! rather than guessing from byte length.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

fn bpe() -> Option<&'static CoreBPE> {
    static BPE: OnceLock<Option<CoreBPE>> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::cl100k_base().ok()).as_ref()
}

/// Number of tokens in `text` (bytes/4 if the encoder failed to initialise).
pub fn count(text: &str) -> usize {
    match bpe() {
        Some(b) => b.encode_ordinary(text).len(),
        None => text.len().div_ceil(4),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_real_tokens() {
        assert_eq!(super::count("hello world"), 2);
        let json = r#"{"cpu":{"util_pct":12.5}}"#;
        let n = super::count(json);
        assert!((5..=15).contains(&n), "{n}");
    }
}
