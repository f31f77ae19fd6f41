//! The `ip-counter` binary: load settings, start logging, serve until SIGINT or SIGTERM.

use std::process::ExitCode;

use ip_counter::app::App;
use ip_counter::config::{Config, ConfigError, USAGE_EXIT_CODE};
use ip_counter::{shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(ConfigError::Info(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(ConfigError::Invalid(line)) => {
            eprintln!("{line}");
            return ExitCode::from(USAGE_EXIT_CODE);
        }
    };
    telemetry::init(&config);
    let app = match App::build(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("ingest listening on http://{}", app.ingest_addr());
    println!("metrics listening on http://{}", app.metrics_addr());
    match app.run_until_stopped(shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}
