//! Throw-away schemas in a PostgreSQL database, so a benchmark (or test)
//! gets an empty repository per run without touching anything else there.

use std::sync::Mutex;

use crate::error::Error;
use crate::policies::repo::postgres::PostgresRepo;
use crate::policies::repo::Repository;

pub struct Scratch {
    url: String,
    admin: Mutex<postgres::Client>,
    prefix: String,
    created: Mutex<Vec<String>>,
}

impl Scratch {
    pub fn new(url: &str) -> Result<Scratch, Error> {
        let admin = postgres::Client::connect(url, postgres::NoTls).map_err(|e| {
            Error::Setup(format!(
                "cannot connect to PostgreSQL for the benchmark: {e}; is the server running (scripts/pg-test-server.sh start)?"
            ))
        })?;
        Ok(Scratch {
            url: url.to_string(),
            admin: Mutex::new(admin),
            prefix: format!("schedcp_bench_{}", std::process::id()),
            created: Mutex::new(Vec::new()),
        })
    }

    fn schema(&self, tag: &str) -> String {
        let tag: String = tag.chars().filter(char::is_ascii_alphanumeric).collect();
        format!("{}_{tag}", self.prefix)
    }

    /// A repository in a new, empty schema named after `tag`.
    pub fn repo(&self, tag: &str) -> Result<Box<dyn Repository>, Error> {
        let schema = self.schema(tag);
        let mut admin = self.admin.lock().expect("not poisoned");
        admin
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; CREATE EXTENSION IF NOT EXISTS vector SCHEMA public"
            ))
            .map_err(|e| Error::Internal(anyhow::anyhow!("creating schema {schema}: {e}")))?;
        self.created
            .lock()
            .expect("not poisoned")
            .push(schema.clone());
        drop(admin);
        self.open(tag)
    }

    /// Another connection to the schema [`Scratch::repo`] made for `tag`.
    pub fn open(&self, tag: &str) -> Result<Box<dyn Repository>, Error> {
        let schema = self.schema(tag);
        let sep = if self.url.contains('?') { '&' } else { '?' };
        // search_path: the scratch schema first (tables go there), public for pgvector's type.
        let url = format!("{}{sep}options=-csearch_path%3D{schema},public", self.url);
        Ok(Box::new(PostgresRepo::connect(&url)?))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Ok(mut admin) = self.admin.lock() else {
            return;
        };
        for s in self.created.lock().map(|c| c.clone()).unwrap_or_default() {
            if let Err(e) = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE")) {
                tracing::warn!("dropping benchmark schema {s}: {e}");
            }
        }
    }
}
