//! api — the doors to the services: MCP (stdio and streamable HTTP), REST with
//! OpenAPI, scoped tokens, rate limits and the hash-chained audit log. Not
//! built yet: see the agent-interface issue. Every door calls the same typed
//! service functions the CLI calls.
