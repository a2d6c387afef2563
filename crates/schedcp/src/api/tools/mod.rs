//! Every operation the API offers, grouped by service. A service that does
//! not exist yet (tune) has no tools here.

mod audit;
pub mod deploy;
mod knobs;
mod observe;
mod policies;
mod verify;

use super::ops::Op;

pub fn all() -> Vec<Op> {
    let mut ops = observe::ops();
    ops.extend(policies::ops());
    ops.extend(verify::ops());
    ops.extend(deploy::ops());
    ops.extend(knobs::ops());
    ops.extend(audit::ops());
    ops
}
