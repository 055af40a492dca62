use clap::Parser;
use std::process::ExitCode;
use switchyard::cli::{default_config_path, Cli, Command};
use switchyard::{admin, app, config, probe, telemetry};

// Per event the gateway allocates and frees many small buffers across threads; mimalloc's
// thread-local free lists cost about half of glibc malloc's per event (docs/benchmarks.md).
// Built with `no_thp`: huge pages under its eagerly committed arenas raised RSS by 8–20 MiB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Schema => {
            let schema = schemars::schema_for!(config::Config);
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).expect("schema serializes")
            );
            ExitCode::SUCCESS
        }
        Command::Health {
            ready,
            admin,
            config,
        } => {
            let addr = admin.unwrap_or_else(|| {
                let path = config.unwrap_or_else(default_config_path);
                let listen = config::load_file(&path)
                    .map(|c| c.admin.listen)
                    .unwrap_or_else(|_| ([127, 0, 0, 1], 9464).into());
                admin::local_address(listen)
            });
            let path = if ready { "/readyz" } else { "/healthz" };
            match admin::probe(addr, path, std::time::Duration::from_secs(3)) {
                Ok((200, _)) => ExitCode::SUCCESS,
                Ok((status, body)) => {
                    println!("{path}: {status} {body}");
                    ExitCode::from(1)
                }
                Err(e) => {
                    println!("{path}: cannot reach {addr}: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Validate { config, connect } => {
            let path = config.unwrap_or_else(default_config_path);
            match config::load_file(&path) {
                Ok(cfg) => {
                    eprintln!("{}: valid", path.display());
                    for (name, p) in &cfg.pipelines {
                        let Some(w) = cfg
                            .functions
                            .get(&p.function)
                            .and_then(|f| p.prefetch_below(f))
                        else {
                            continue;
                        };
                        eprintln!(
                            "{}: warning: pipelines.{name}: {} (max_in_flight {}, prefetch {})",
                            path.display(),
                            config::PrefetchBelow::ADVICE,
                            w.max_in_flight,
                            w.prefetch
                        );
                    }
                    if !connect {
                        return ExitCode::SUCCESS;
                    }
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .enable_all()
                        .build()
                        .expect("tokio runtime");
                    let checks = rt.block_on(probe::run(&cfg));
                    if probe::report(&checks) {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run { config, watch } => {
            let path = config.unwrap_or_else(default_config_path);
            let cfg = match config::load_file_with_source(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let _spans = match telemetry::init_tracing(cli.log_format, &cfg.config.telemetry) {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("telemetry: {e}");
                    return ExitCode::from(2);
                }
            };
            tracing::info!(config = %path.display(), version = env!("CARGO_PKG_VERSION"), "starting");
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            rt.enable_all();
            // Without its LIFO slot, tokio runs a woken task after those already waiting
            // instead of right after the task that woke it: the client connection tasks
            // (async-nats, hyper) then find several writes queued, not one. Measured over six
            // paired benchmark runs at 5-20% less gateway CPU per message (docs/benchmarks.md).
            #[cfg(tokio_unstable)]
            rt.disable_lifo_slot();
            let rt = rt.build().expect("tokio runtime");
            let source = app::Source {
                path,
                watch: (!watch.is_zero()).then_some(watch),
            };
            let result = rt.block_on(app::run(cfg, Some(source)));
            drop(rt);
            match result {
                Ok(app::Exit::Clean) => ExitCode::SUCCESS,
                Ok(app::Exit::Fatal) => ExitCode::from(1),
                Err(e) => {
                    tracing::error!(error = %e, "fatal");
                    ExitCode::from(1)
                }
            }
        }
    }
}
