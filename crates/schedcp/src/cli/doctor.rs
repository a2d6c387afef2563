use clap::Args;
use schedcp::config::Config;
use schedcp::error::{exit, Error};
use schedcp::{doctor, lab::Lab};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Exit code 0 when the lab is ready, 3 when something it needs is missing.
pub fn run(cfg: Config, args: DoctorArgs) -> Result<i32, Error> {
    let report = doctor::run(&Lab::new(cfg));
    if args.json {
        super::output::json(&report)?;
    } else {
        print!("{}", report.render());
    }
    Ok(if report.lab_ready {
        exit::OK
    } else {
        exit::SETUP
    })
}
