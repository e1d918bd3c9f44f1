//! Service A's binary: read the configuration, then serve with telemetry until SIGTERM/Ctrl-C.

use clap::Parser as _;
use service_a::{SERVICE_NAME, config::Config, startup};

/// jemalloc rather than glibc's malloc, so that memory freed after a burst goes back to the
/// kernel: see [`return_freed_memory_at_once`].
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Tells jemalloc to hand pages back to the kernel as soon as they are free (`dirty_decay_ms`
/// 0; its default keeps them for 10 s), as B does (`service-b/src/main.rs` says why): after a
/// burst of callers A's resident memory falls back to what it holds.
fn return_freed_memory_at_once() {
    use tikv_jemalloc_ctl::{Access as _, AsName as _};
    const AT_ONCE_MS: isize = 0;
    // Arenas made from now on (jemalloc makes them as threads first allocate)…
    b"arenas.dirty_decay_ms\0"
        .name()
        .write(AT_ONCE_MS)
        .expect("jemalloc accepts arenas.dirty_decay_ms");
    // …and those made already. An index not in use yet refuses, and takes the default above.
    let arenas: u32 = b"arenas.narenas\0".name().read().unwrap_or(0);
    for arena in 0..arenas {
        let _ = format!("arena.{arena}.dirty_decay_ms\0")
            .name()
            .write(AT_ONCE_MS);
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    return_freed_memory_at_once();
    let config = Config::parse();
    if config.serve.healthcheck {
        return telemetry::edge::probe_exit_code(config.serve.listen);
    }
    let args = config.telemetry.clone();
    telemetry::run(SERVICE_NAME, &args, &[], |settings| async move {
        startup::build(config, settings)
            .await?
            .run_until_stopped(telemetry::edge::signal())
            .await?;
        Ok::<_, startup::StartupError>(())
    })
    .await
}
