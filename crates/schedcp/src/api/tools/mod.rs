//! Every operation the API offers, grouped by service.

mod audit;
pub mod deploy;
mod knobs;
mod observe;
mod policies;
mod tune;
mod verify;

use super::ops::Op;

pub fn all() -> Vec<Op> {
    let mut ops = observe::ops();
    ops.extend(policies::ops());
    ops.extend(verify::ops());
    ops.extend(deploy::ops());
    ops.extend(knobs::ops());
    ops.extend(tune::ops());
    ops.extend(audit::ops());
    ops
}
