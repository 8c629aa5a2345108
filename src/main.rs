//! The `codex-shield` binary: run the program, turn an error into one line and an exit code.

/// musl's allocator serialises every allocation of every thread on one lock; the static
/// build uses mimalloc instead (the glibc build keeps glibc's malloc).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if let Err(e) = codex_shield::run(std::env::args_os()) {
        codex_shield::log::raw(&format!("codex-shield: {e}"));
        std::process::exit(e.exit_code());
    }
}
