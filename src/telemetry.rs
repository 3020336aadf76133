//! Logging: `SLMGATE_LOG` (or `RUST_LOG`) filter, default `info`; JSON
//! lines with `SLMGATE_LOG_FORMAT=json`. Every request runs in a `request`
//! span (id, method, path, route, backend, model, status — never the
//! prompt); each stage opens a `debug` span inside it (`parse`, `triage`,
//! `dispatch`, ...). With the filter at debug (e.g.
//! `SLMGATE_LOG=info,slmgate=debug`) every span logs its time when it
//! closes, so a slow request can be read stage by stage.

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_env("SLMGATE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,mistralrs_core=warn,mistralrs=warn,candle=warn"));
    let spans = if filter.max_level_hint() >= Some(LevelFilter::DEBUG) {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(spans)
        .with_writer(std::io::stderr);
    let res = if std::env::var("SLMGATE_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = res {
        eprintln!("logging already initialised: {e}");
    }
}
