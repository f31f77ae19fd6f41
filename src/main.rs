//! The `ip-counter` binary: the service (load settings, start logging, serve until SIGINT or
//! SIGTERM), or one of the command-line tools.

use std::process::ExitCode;

use ip_counter::app::App;
use ip_counter::cli::{Invocation, count, data_dir, send};
use ip_counter::config::{Config, ConfigError, USAGE_EXIT_CODE};
use ip_counter::{shutdown, telemetry};

fn main() -> ExitCode {
    match Invocation::load() {
        Ok(Invocation::Serve(config)) => serve(*config),
        Ok(Invocation::Count(args)) => count::run(&args),
        Ok(Invocation::Send(args)) => send::run(&args),
        Ok(Invocation::Verify(args)) => data_dir::verify(&args),
        Ok(Invocation::Repair(args)) => data_dir::repair(&args),
        Err(ConfigError::Info(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid(line)) => {
            eprintln!("{line}");
            ExitCode::from(USAGE_EXIT_CODE)
        }
    }
}

// One thread here; App starts a single-threaded runtime on each further core.
#[tokio::main(flavor = "current_thread")]
async fn serve(config: Config) -> ExitCode {
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
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
