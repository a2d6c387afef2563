//! tune — the built-in decision engine: profile, pick candidate policies and
//! parameters, trial them in the lab, deploy a significant winner through a
//! canary. Not built yet.
