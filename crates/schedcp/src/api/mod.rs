//! api — the doors to the services. `schedcp serve` (the privileged daemon)
//! holds the services and answers on a Unix socket (MCP, peer credentials
//! checked) and, when configured, on loopback HTTP: MCP over streamable HTTP
//! at `/mcp` and REST under `/v1` with its OpenAPI document. `schedcp mcp` is
//! the unprivileged stdio bridge an agent launches.
//!
//! - [`ops`]: the operation registry; [`tools`]: the operations themselves.
//! - [`services`]: the daemon state and the one call path (auth, rate limit,
//!   scope, size, run, audit).
//! - [`auth`]: scoped, hashed tokens; [`audit`]: the hash-chained log.
//! - [`slots`], [`targets`]: caps and the target policy for root profilers.
//! - [`mcp`], [`rest`] (+ [`openapi`]): the protocols; [`server`]: listeners.

pub mod audit;
pub mod auth;
pub mod client;
pub mod error;
pub mod jobs;
pub mod line_limit;
pub mod mcp;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod rest;
pub mod server;
pub mod services;
pub mod slots;
pub mod targets;
pub mod tools;

pub use services::Services;
