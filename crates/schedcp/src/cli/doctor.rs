use schedcp::config::Config;
use schedcp::error::{exit, Error};
use schedcp::{doctor, lab::Lab};

use super::output::Output;

/// Exit code 0 when the lab is ready, 3 when something it needs is missing.
pub fn run(cfg: Config, out: Output) -> Result<i32, Error> {
    let report = doctor::run(&Lab::new(cfg));
    out.emit(&report)?;
    Ok(if report.lab_ready {
        exit::OK
    } else {
        exit::SETUP
    })
}
