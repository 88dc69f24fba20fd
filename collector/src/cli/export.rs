//! `yagura export`: a query's whole result as NDJSON or CSV on standard output, streamed
//! from `GET /api/v1/export` (constant memory whatever the size).

use std::io::Write as _;

use anyhow::Context as _;
use clap::Args;

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    scope: super::search::QueryArgs,
    /// ndjson (default) or csv.
    #[arg(long, default_value = "ndjson")]
    format: String,
}

pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let mut response = args
        .scope
        .get("/api/v1/export", vec![("format", args.format.clone())])
        .await?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = response.chunk().await.context("reading the export")? {
        out.write_all(&chunk)
            .context("writing to standard output")?;
    }
    out.flush()?;
    Ok(())
}
