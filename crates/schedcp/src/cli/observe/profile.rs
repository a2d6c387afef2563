use clap::Args;
use schedcp::config::Config;
use schedcp::error::Error;

#[derive(Debug, Args)]
pub struct ProfileArgs {}

pub fn run(_cfg: Config, _a: ProfileArgs, _quiet: bool) -> Result<i32, Error> {
    Err(Error::Input("not built yet".into()))
}
