use clap::Args;
use schedcp::config::Config;
use schedcp::error::Error;

#[derive(Debug, Args)]
pub struct SummaryArgs {}
#[derive(Debug, Args)]
pub struct DetailArgs {}

pub fn run_summary(_cfg: Config, _a: SummaryArgs) -> Result<i32, Error> {
    Err(Error::Input("not built yet".into()))
}
pub fn run_detail(_cfg: Config, _a: DetailArgs) -> Result<i32, Error> {
    Err(Error::Input("not built yet".into()))
}
