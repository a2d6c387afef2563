//! The scheduler policy repository. For now: the built-in library embedded in
//! the binary and the metadata schema every policy follows. The persistent,
//! searchable store (SQLite / PostgreSQL) builds on these types.

pub mod builtin;
pub mod meta;
