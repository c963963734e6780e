//! Diagnostic logging to stderr, with a filter the admin `/logging`
//! endpoint can change at run time. (Access logs go to stdout.)

use std::io::IsTerminal;
use std::sync::Arc;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};

/// A function that replaces the log filter.
pub type LogControl = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Installs the global subscriber and returns its filter control.
pub fn init(filter: &str) -> anyhow::Result<LogControl> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("bad log filter {filter:?}: {e}"))?;
    let (layer, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(layer)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(true),
        )
        .init();
    Ok(Arc::new(move |new: &str| {
        let f = EnvFilter::try_new(new).map_err(|e| format!("bad log filter {new:?}: {e}"))?;
        handle.reload(f).map_err(|e| e.to_string())
    }))
}
