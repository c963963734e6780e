//! `meshwork demo-app <role>` (hidden): one of the demo's services, so the
//! demo needs nothing but this binary.

use clap::Args;
use meshwork_local::demo::app::{self, Role};

/// Which service to run.
#[derive(Args, Debug)]
pub struct DemoAppArgs {
    /// order, inventory, shipping or loadgen.
    role: Role,
}

/// Runs the service until it is stopped.
pub async fn run(a: DemoAppArgs) -> anyhow::Result<()> {
    app::run(a.role).await?;
    Ok(())
}
