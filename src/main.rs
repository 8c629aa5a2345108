//! The `codex-shield` binary: run the program, turn an error into one line and an exit code.

/// musl's allocator serialises every allocation of every thread on one lock; the static
/// build uses jemalloc instead (the glibc build keeps glibc's malloc), built without
/// per-thread caches (.cargo/config.toml): with a thread per answer in flight, a cache per
/// thread is memory per answer.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    if let Err(e) = codex_shield::run(std::env::args_os()) {
        codex_shield::log::raw(&format!("codex-shield: {e}"));
        std::process::exit(e.exit_code());
    }
}
