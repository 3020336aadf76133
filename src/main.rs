use std::process::ExitCode;

fn main() -> ExitCode {
    match slmgate::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slmgate: {e}");
            ExitCode::FAILURE
        }
    }
}
