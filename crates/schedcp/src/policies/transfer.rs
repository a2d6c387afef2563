//! Export and import: the whole library as one JSON document, so a fleet
//! can share what one machine learned, and a store can be rebuilt.
//!
//! Every version carries its content hash; import recomputes it and refuses
//! a document whose content does not match (edited or corrupted). Vectors
//! are not exported: they belong to the embedding model, and import embeds
//! again. Imported results keep their values and environment; their
//! `recorded_at` becomes the import time, and the original is kept in the
//! environment field.

use serde::{Deserialize, Serialize};

use super::model::History;

pub const FORMAT: &str = "schedcp-policy-library";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    pub format: String,
    pub format_version: u32,
    pub exported_at: String,
    pub policies: Vec<History>,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// `name@version` in the file → `name@version` here.
    pub added: Vec<(String, String)>,
    /// Versions already present with the same content.
    pub unchanged: Vec<String>,
    pub results: usize,
}
