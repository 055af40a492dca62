//! Wiring: build every function, output and trigger from the config, run them, drain on a
//! signal.

use crate::config::{Config, Ordering};
use crate::engine::{deliver::NamedOutput, run_dispatcher, Delivery};
use crate::invoker::{self, retry::RetryPolicy, supervisor::Supervisor, FunctionService};
use crate::{admin, engine};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use switchyard_sdk::{BoxError, Health, TriggerContext};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How the gateway stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Drained after a signal.
    Clean,
    /// A trigger failed for good.
    Fatal,
}

/// Run the gateway until a signal (drain, exit 0) or a fatal trigger error (exit 1).
pub async fn run(config: Config) -> Result<Exit, BoxError> {
    let metrics = admin::install_metrics()?;
    let health = Health::default();
    // Components register as they are built; until every one is, the gateway is not ready.
    let startup = health.register("startup", "starting: not every pipeline is built yet");
    let stop_functions = CancellationToken::new();
    let drain = CancellationToken::new();

    // Admin server first, so /healthz answers and /readyz explains the start-up.
    let admin_listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .map_err(|e| format!("admin.listen {}: {e}", config.admin.listen))?;
    let admin_app = admin::router(health.clone(), metrics);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(admin_listener, admin_app).await {
            tracing::error!(error = %e, "admin server stopped");
        }
    });
    tracing::info!(listen = %config.admin.listen, "admin server listening");

    // Functions: start supervised processes, build one shared service per function.
    let mut functions: HashMap<String, FunctionService> = HashMap::new();
    let mut supervisors = JoinSet::new();
    for (name, f) in &config.functions {
        let fh = health.register(format!("functions.{name}"), "starting");
        let url = match &f.command {
            Some(cmd) => {
                let sup =
                    Supervisor::new(name, cmd.clone(), f.env.clone().into_iter().collect(), fh)?;
                let url = sup.url();
                let (tx, rx) = tokio::sync::oneshot::channel();
                supervisors.spawn(sup.run(stop_functions.clone(), tx));
                if tokio::time::timeout(Duration::from_secs(60), rx)
                    .await
                    .is_err()
                {
                    tracing::warn!(function = %name, "function not accepting connections yet; events will be retried");
                }
                url
            }
            None => {
                let url = reqwest::Url::parse(f.url.as_deref().unwrap_or_default())?;
                tokio::spawn(probe_function(url.clone(), fh));
                url
            }
        };
        functions.insert(name.clone(), invoker::function_service(name, f, url)?);
    }

    // Pipelines: outputs, dead letter, trigger, dispatcher.
    let mut routes: Vec<axum::Router> = Vec::new();
    let mut triggers = JoinSet::new();
    let mut dispatchers = JoinSet::new();
    let max_body = config.ingress.max_body.as_usize();
    for (name, p) in &config.pipelines {
        let fcfg = &config.functions[&p.function];
        let mut outputs = Vec::new();
        for o in &p.outputs {
            let oh = health.register(format!("pipelines.{name}.outputs.{}", o.name), "connecting");
            let output = o
                .output
                .build()
                .await
                .map_err(|e| format!("pipelines.{name}.outputs.{}: {e}", o.name))?;
            match output.healthcheck().await {
                Ok(()) => oh.ready(),
                Err(e) => oh.not_ready(e.to_string()),
            }
            outputs.push(NamedOutput {
                name: o.name.clone(),
                output,
            });
        }
        let dead_letter = match &p.dead_letter {
            Some(d) => Some(
                d.build()
                    .await
                    .map_err(|e| format!("pipelines.{name}.dead_letter: {e}"))?,
            ),
            None => None,
        };
        let pipeline: Arc<str> = Arc::from(name.as_str());
        let retry = Arc::new(p.retry.clone());
        let metrics = crate::telemetry::PipelineMetrics::new(
            name,
            &p.function,
            outputs.iter().map(|o| o.name.as_str()),
        );
        let policy = RetryPolicy::new(retry.clone(), pipeline.clone(), metrics.retry.clone());
        let batch = p.batch.max_events > 1;
        let delivery = Arc::new(Delivery {
            pipeline: pipeline.clone(),
            trigger_type: p.trigger.type_name(),
            trigger_name: Arc::from(p.trigger_name.as_str()),
            function: Arc::from(p.function.as_str()),
            invoker: invoker::with_retry(functions[&p.function].clone(), policy),
            batch,
            retry,
            output_names: outputs
                .iter()
                .map(|o| o.name.clone())
                .collect::<Vec<_>>()
                .into(),
            outputs,
            dead_letter,
            metrics,
        });
        let max_events = p.batch.max_events.max(1);
        let limits = engine::dispatch::Limits {
            max_in_flight: p
                .max_in_flight
                .unwrap_or(fcfg.concurrency * max_events)
                .max(1),
            max_jobs: fcfg.concurrency,
            max_events,
            max_wait: p.batch.max_wait.get(),
            ordering: p.ordering.unwrap_or_else(|| p.trigger.default_ordering()),
        };
        if limits.ordering != Ordering::None {
            tracing::debug!(pipeline = %name, ordering = ?limits.ordering, "ordered delivery");
        }
        let (tx, rx) = mpsc::channel(limits.max_in_flight.min(1024));
        let th = health.register(format!("pipelines.{name}.trigger"), "starting");
        let cx = TriggerContext {
            pipeline: name.clone(),
            events: tx,
            shutdown: drain.child_token(),
            health: th,
            max_body,
            body_timeout: config.ingress.body_timeout.get(),
        };
        let trigger = p
            .trigger
            .build(cx)
            .map_err(|e| format!("pipelines.{name}.trigger: {e}"))?;
        if let Some(r) = trigger.routes {
            routes.push(r);
        }
        let tname = name.clone();
        triggers.spawn(async move { (tname, trigger.task.await) });
        dispatchers.spawn(run_dispatcher(delivery, rx, limits, drain.child_token()));
    }

    // Ingress, when a trigger serves on it.
    let mut ingress = None;
    if !routes.is_empty() {
        let app = routes
            .into_iter()
            .fold(axum::Router::new(), axum::Router::merge);
        let listener = tokio::net::TcpListener::bind(config.ingress.listen)
            .await
            .map_err(|e| format!("ingress.listen {}: {e}", config.ingress.listen))?;
        tracing::info!(listen = %config.ingress.listen, "ingress server listening");
        let limits = crate::ingress::Limits {
            header_timeout: config.ingress.header_timeout.get(),
            max_connections: config.ingress.max_connections.max(1),
        };
        ingress = Some(tokio::spawn(crate::ingress::serve(
            listener,
            app,
            limits,
            drain.clone(),
        )));
    }
    tracing::info!(
        pipelines = config.pipelines.len(),
        functions = config.functions.len(),
        "switchyard running"
    );
    startup.ready();

    // Wait for a signal or a trigger that fails for good.
    let exit = tokio::select! {
        sig = shutdown_signal() => {
            tracing::info!(signal = sig, "draining: no new events; finishing what is in flight");
            Exit::Clean
        }
        Some(Ok((name, res))) = triggers.join_next() => match res {
            Ok(()) => {
                tracing::info!(pipeline = %name, "trigger finished");
                wait_signal_after_trigger_end(&mut triggers).await
            }
            Err(e) => {
                tracing::error!(pipeline = %name, error = %e, "trigger failed; stopping");
                Exit::Fatal
            }
        },
    };

    // Drain: stop triggers and ingress, finish in-flight events within shutdown_timeout.
    drain.cancel();
    tokio::spawn(async {
        let sig = shutdown_signal().await;
        tracing::warn!(signal = sig, "second signal: exiting at once");
        std::process::exit(1);
    });
    let timeout = config.shutdown_timeout.get();
    let finished = tokio::time::timeout(timeout, async {
        while triggers.join_next().await.is_some() {}
        while dispatchers.join_next().await.is_some() {}
        if let Some(i) = ingress {
            let _ = i.await;
        }
    })
    .await;
    if finished.is_err() {
        tracing::warn!(timeout = ?timeout, "shutdown_timeout reached; unfinished events are left unacknowledged");
        dispatchers.abort_all();
        while dispatchers.join_next().await.is_some() {}
    }
    stop_functions.cancel();
    while supervisors.join_next().await.is_some() {}
    tracing::info!("stopped");
    Ok(exit)
}

/// All triggers may finish on their own (none does today); keep serving until a signal.
async fn wait_signal_after_trigger_end(
    triggers: &mut JoinSet<(String, Result<(), BoxError>)>,
) -> Exit {
    loop {
        tokio::select! {
            _ = shutdown_signal() => return Exit::Clean,
            next = triggers.join_next() => match next {
                Some(Ok((name, Err(e)))) => {
                    tracing::error!(pipeline = %name, error = %e, "trigger failed; stopping");
                    return Exit::Fatal;
                }
                Some(_) => {}
                None => {
                    shutdown_signal().await;
                    return Exit::Clean;
                }
            },
        }
    }
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// For a function given by `url`: ready while its port accepts connections.
async fn probe_function(url: reqwest::Url, health: switchyard_sdk::health::HealthHandle) {
    let host = url.host_str().unwrap_or("127.0.0.1").to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    loop {
        match tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => health.ready(),
            _ => health.not_ready(format!("cannot connect to the function at {host}:{port}")),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
