//! (in progress) The embedded SQLite store.
