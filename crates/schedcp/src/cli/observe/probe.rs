use clap::Args;
use schedcp::config::Config;
use schedcp::error::Error;

#[derive(Debug, Args)]
pub struct ProbeArgs {}

pub fn run(_cfg: Config, _a: ProbeArgs, _quiet: bool) -> Result<i32, Error> {
    Err(Error::Input("not built yet".into()))
}
