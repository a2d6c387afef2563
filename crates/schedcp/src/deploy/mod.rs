//! deploy — token-gated attach on the production kernel, canary with KPI
//! monitoring, circuit breaker and rollback. Not built yet: see the
//! deployment issue. The host kernel here has no sched_ext, so its tests
//! will run against a lab node (a long-running micro-VM).
