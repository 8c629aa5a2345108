//! The `codex-shield` binary: run the program, turn an error into one line and an exit code.

fn main() {
    if let Err(e) = codex_shield::run(std::env::args_os()) {
        eprintln!("codex-shield: {e}");
        std::process::exit(e.exit_code());
    }
}
