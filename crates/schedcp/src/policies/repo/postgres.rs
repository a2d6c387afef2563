//! Fleet backend: PostgreSQL + pgvector. (Being written.)

pub struct PostgresRepo;

impl PostgresRepo {
    pub fn connect(_url: &str) -> Result<super::sqlite::SqliteRepo, crate::error::Error> {
        Err(crate::error::Error::Setup(
            "postgres backend: being written".into(),
        ))
    }
}
