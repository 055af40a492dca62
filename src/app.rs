//! Wiring: build every function, output and trigger from the config, run them, reload the
//! config on SIGHUP or when its file changes, drain on SIGTERM/SIGINT.
//!
//! A reload compares the new config with the running one entry by entry (after
//! interpolation, so a rotated secret counts as a change). Pipelines whose entry or whose
//! function's entry changed, and removed ones, are drained exactly as on shutdown (no new
//! events, in-flight ones finished and acknowledged) before the new version starts; unchanged
//! pipelines are not touched. An invalid config, or one whose new outputs cannot be built, is
//! refused as a whole and the running config stays.

use crate::config::{Config, FunctionConfig, Loaded, Ordering, PipelineConfig};
use crate::engine::{deliver::NamedOutput, run_dispatcher, Delivery};
use crate::invoker::{self, retry::RetryPolicy, supervisor::Supervisor, FunctionService};
use crate::{admin, engine, telemetry};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use switchyard_sdk::{BoxError, Health, Output, TriggerContext};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How the gateway stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Drained after a signal.
    Clean,
    /// A trigger failed for good, or a delivery task failed (a bug).
    Fatal,
}

/// Where the running config came from, for reloads.
#[derive(Debug, Clone)]
pub struct Source {
    /// The config file, read again on SIGHUP.
    pub path: PathBuf,
    /// How often the file is checked for a change; `None` reloads on SIGHUP only.
    pub watch: Option<Duration>,
}

/// Run the gateway until a signal (drain, exit 0) or a fatal trigger error (exit 1).
pub async fn run(loaded: Loaded, source: Option<Source>) -> Result<Exit, BoxError> {
    let metrics = admin::install_metrics()?;
    let health = Health::default();
    // Components register as they are built; until every one is, the gateway is not ready.
    let startup = health.register("startup", "starting: not every pipeline is built yet");

    // Admin server first, so /healthz answers and /readyz explains the start-up.
    let config = &loaded.config;
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

    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel();
    let mut gw = Gateway::new(health, &loaded, fatal_tx);
    gw.apply(Plan::new(None, &loaded), loaded).await?;
    tracing::info!(
        pipelines = gw.pipelines.len(),
        functions = gw.functions.len(),
        "switchyard running"
    );
    startup.ready();

    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut watcher = source.as_ref().map(FileWatch::new);
    let exit = loop {
        let changed = async {
            match watcher.as_mut() {
                Some(w) => w.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            sig = shutdown_signal() => {
                tracing::info!(signal = sig, "draining: no new events; finishing what is in flight");
                break Exit::Clean;
            }
            Some((name, error)) = fatal_rx.recv() => {
                tracing::error!(pipeline = %name, error = %error, "pipeline failed; stopping");
                break Exit::Fatal;
            }
            _ = hup.recv() => match &source {
                Some(s) => {
                    gw.reload(&s.path, "SIGHUP").await;
                    // What SIGHUP just read is not a change for the watch to reload again.
                    if let Some(w) = watcher.as_mut() {
                        w.last = std::fs::read(&s.path).ok();
                    }
                }
                None => tracing::warn!("SIGHUP: no config file to reload"),
            },
            () = changed => {
                let s = source.as_ref().expect("a watcher has a source");
                gw.reload(&s.path, "file changed").await;
            }
        }
    };
    gw.shutdown().await;
    Ok(exit)
}

/// The running functions, pipelines and ingress server.
struct Gateway {
    health: Health,
    /// The settings a reload cannot change (listeners, shutdown timeout), from the first config.
    fixed: Fixed,
    /// The running config's documents, to find what a reload changes.
    running: Option<Loaded>,
    functions: BTreeMap<String, RunningFunction>,
    pipelines: BTreeMap<String, RunningPipeline>,
    ingress: Ingress,
    /// Cancelled at shutdown: every trigger drains.
    drain: CancellationToken,
    fatal: mpsc::UnboundedSender<(String, String)>,
}

#[derive(Clone)]
struct Fixed {
    admin_listen: SocketAddr,
    telemetry: serde_json::Value,
    shutdown_timeout: Duration,
    max_body: usize,
    body_timeout: Duration,
}

struct RunningFunction {
    service: FunctionService,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct RunningPipeline {
    stop: CancellationToken,
    trigger: JoinHandle<()>,
    dispatcher: JoinHandle<()>,
}

/// A pipeline's outputs and dead letter, built (and connected) before anything is drained.
struct Parts {
    outputs: Vec<(NamedOutput, Result<(), String>)>,
    dead_letter: Option<Arc<dyn Output>>,
}

/// What a new config changes.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Functions to start (new or changed).
    pub start_functions: BTreeSet<String>,
    /// Functions to stop (removed or changed).
    pub stop_functions: BTreeSet<String>,
    /// Pipelines to start (new or changed, or their function changed).
    pub start_pipelines: BTreeSet<String>,
    /// Pipelines to drain (removed or changed, or their function changed).
    pub stop_pipelines: BTreeSet<String>,
}

impl Plan {
    /// Compare the running config (none at start-up) with the new one.
    pub fn new(old: Option<&Loaded>, new: &Loaded) -> Plan {
        let mut plan = Plan::default();
        let entry = |l: Option<&Loaded>, map: &str, name: &str| {
            l.map(|l| l.entry(map, name).clone())
                .unwrap_or(serde_json::Value::Null)
        };
        for name in names(old.map(|o| &o.config.functions), &new.config.functions) {
            let (before, after) = (
                entry(old, "functions", name),
                entry(Some(new), "functions", name),
            );
            if before != after {
                if !before.is_null() {
                    plan.stop_functions.insert(name.clone());
                }
                if !after.is_null() {
                    plan.start_functions.insert(name.clone());
                }
            }
        }
        for name in names(old.map(|o| &o.config.pipelines), &new.config.pipelines) {
            let was = old.and_then(|o| o.config.pipelines.get(name));
            let is = new.config.pipelines.get(name);
            let function_changed = |p: Option<&PipelineConfig>| {
                p.is_some_and(|p| {
                    plan.stop_functions.contains(&p.function)
                        || plan.start_functions.contains(&p.function)
                })
            };
            let changed = entry(old, "pipelines", name) != entry(Some(new), "pipelines", name)
                || function_changed(was)
                || function_changed(is);
            if changed {
                if was.is_some() {
                    plan.stop_pipelines.insert(name.clone());
                }
                if is.is_some() {
                    plan.start_pipelines.insert(name.clone());
                }
            }
        }
        plan
    }

    fn is_empty(&self) -> bool {
        *self == Plan::default()
    }
}

/// The names of a map in the running config or the new one, each once.
fn names<'a, V>(
    old: Option<&'a BTreeMap<String, V>>,
    new: &'a BTreeMap<String, V>,
) -> BTreeSet<&'a String> {
    old.into_iter()
        .flat_map(BTreeMap::keys)
        .chain(new.keys())
        .collect()
}

impl Gateway {
    fn new(
        health: Health,
        loaded: &Loaded,
        fatal: mpsc::UnboundedSender<(String, String)>,
    ) -> Self {
        let drain = CancellationToken::new();
        let config = &loaded.config;
        Self {
            fixed: Fixed {
                admin_listen: config.admin.listen,
                telemetry: loaded.document["telemetry"].clone(),
                shutdown_timeout: config.shutdown_timeout.get(),
                max_body: config.ingress.max_body.as_usize(),
                body_timeout: config.ingress.body_timeout.get(),
            },
            ingress: Ingress::new(config, drain.clone()),
            health,
            running: None,
            functions: BTreeMap::new(),
            pipelines: BTreeMap::new(),
            drain,
            fatal,
        }
    }

    /// Read the file again and apply what changed; an invalid config changes nothing.
    async fn reload(&mut self, path: &std::path::Path, why: &str) {
        let outcome = match crate::config::load_file_with_source(path) {
            Err(e) => {
                tracing::error!(reason = why, problems = %e, "config reload refused: the new config is invalid; still running the previous one");
                "invalid"
            }
            Ok(loaded) => {
                self.warn_fixed(&loaded);
                let plan = Plan::new(self.running.as_ref(), &loaded);
                if plan.is_empty() {
                    tracing::info!(reason = why, "config reload: nothing changed");
                    "unchanged"
                } else {
                    match self.apply(plan, loaded).await {
                        Ok(()) => "applied",
                        Err(e) => {
                            tracing::error!(reason = why, error = %e, "config reload failed; still running the previous config");
                            "failed"
                        }
                    }
                }
            }
        };
        metrics::counter!(telemetry::CONFIG_RELOADS, "outcome" => outcome).increment(1);
    }

    /// Settings only a restart applies: say so instead of silently ignoring them.
    fn warn_fixed(&self, loaded: &Loaded) {
        let (f, new) = (&self.fixed, &loaded.config);
        let mut ignored = Vec::new();
        if loaded.document["telemetry"] != f.telemetry {
            ignored.push("telemetry");
        }
        if new.admin.listen != f.admin_listen {
            ignored.push("admin.listen");
        }
        if new.ingress.listen != self.ingress.listen
            || new.ingress.max_body.as_usize() != f.max_body
            || new.ingress.body_timeout.get() != f.body_timeout
            || new.ingress.header_timeout.get() != self.ingress.limits.header_timeout
            || new.ingress.max_connections.max(1) != self.ingress.limits.max_connections
        {
            ignored.push("ingress");
        }
        if new.shutdown_timeout.get() != f.shutdown_timeout {
            ignored.push("shutdown_timeout");
        }
        if !ignored.is_empty() {
            tracing::warn!(settings = ?ignored, "config reload: these settings take effect only after a restart");
        }
    }

    /// Make the running pipelines those of `loaded`. Everything new is built first; a
    /// failure then stops what was started and leaves the running config as it was.
    /// `plan` is what `loaded` changes against the running config.
    async fn apply(&mut self, plan: Plan, loaded: Loaded) -> Result<(), BoxError> {
        let config = &loaded.config;
        if self.running.is_some() {
            tracing::info!(
                start_functions = ?plan.start_functions,
                stop_functions = ?plan.stop_functions,
                start_pipelines = ?plan.start_pipelines,
                drain_pipelines = ?plan.stop_pipelines,
                "config reload: applying"
            );
        }

        // 1. Build: new functions, the outputs of new pipelines, the ingress listener.
        let mut started = BTreeMap::new();
        let mut parts = BTreeMap::new();
        let built: Result<(), BoxError> = async {
            for name in &plan.start_functions {
                let f = start_function(&self.health, name, &config.functions[name]).await?;
                started.insert(name.clone(), f);
            }
            for name in &plan.start_pipelines {
                parts.insert(
                    name.clone(),
                    build_parts(name, &config.pipelines[name]).await?,
                );
            }
            if plan
                .start_pipelines
                .iter()
                .any(|p| config.pipelines[p].trigger.ingress_path().is_some())
            {
                self.ingress.start().await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = built {
            for (_, f) in started {
                f.stop().await;
            }
            return Err(e);
        }

        // 2. Drain what is removed or changed, all at once; then stop their functions.
        let draining: Vec<_> = plan
            .stop_pipelines
            .iter()
            .filter_map(|name| self.pipelines.remove(name).map(|p| (name.clone(), p)))
            .collect();
        let timeout = self.fixed.shutdown_timeout;
        futures::future::join_all(
            draining
                .into_iter()
                .map(|(name, p)| async move { p.drain(&name, timeout).await }),
        )
        .await;
        for name in &plan.stop_pipelines {
            self.ingress.set(name, None);
            if !plan.start_pipelines.contains(name) {
                self.health.remove_prefix(&format!("pipelines.{name}."));
                tracing::info!(pipeline = %name, "pipeline removed");
            }
        }
        for name in &plan.stop_functions {
            if let Some(f) = self.functions.remove(name) {
                f.stop().await;
            }
            if !plan.start_functions.contains(name) {
                self.health.remove_prefix(&format!("functions.{name}"));
            }
        }
        self.functions.extend(started);

        // 3. Start the new and changed pipelines.
        for (name, parts) in parts {
            let p = &config.pipelines[&name];
            let function = self.functions[&p.function].service.clone();
            match self.start_pipeline(&name, p, &config.functions[&p.function], function, parts) {
                Ok(running) => {
                    self.pipelines.insert(name, running);
                }
                // At start-up a trigger that cannot be built stops the gateway; after a
                // reload the pipeline stays down and /readyz says why.
                Err(e) if self.running.is_none() => return Err(e),
                Err(e) => {
                    tracing::error!(pipeline = %name, error = %e, "pipeline not started");
                    self.health
                        .register(format!("pipelines.{name}.trigger"), e.to_string());
                }
            }
        }
        self.running = Some(loaded);
        Ok(())
    }

    fn start_pipeline(
        &mut self,
        name: &str,
        p: &PipelineConfig,
        fcfg: &FunctionConfig,
        function: FunctionService,
        parts: Parts,
    ) -> Result<RunningPipeline, BoxError> {
        let mut outputs = Vec::new();
        for (o, healthy) in parts.outputs {
            let oh = self
                .health
                .register(format!("pipelines.{name}.outputs.{}", o.name), "connecting");
            match healthy {
                Ok(()) => oh.ready(),
                Err(e) => oh.not_ready(e),
            }
            outputs.push(o);
        }
        let pipeline: Arc<str> = Arc::from(name);
        let retry = Arc::new(p.retry.clone());
        let metrics = telemetry::PipelineMetrics::new(
            name,
            &p.function,
            outputs.iter().map(|o| o.name.as_str()),
        );
        let policy = RetryPolicy::new(retry.clone(), pipeline.clone(), metrics.retry.clone());
        let delivery = Arc::new(Delivery {
            pipeline,
            trigger_type: p.trigger.type_name(),
            trigger_name: Arc::from(p.trigger_name.as_str()),
            function: Arc::from(p.function.as_str()),
            invoker: invoker::with_retry(function, policy),
            batch: p.batch.max_events > 1,
            retry,
            output_names: outputs
                .iter()
                .map(|o| o.name.clone())
                .collect::<Vec<_>>()
                .into(),
            outputs,
            dead_letter: parts.dead_letter,
            metrics,
        });
        let max_events = p.batch.max_events.max(1);
        let max_in_flight = p
            .max_in_flight
            .unwrap_or_else(|| {
                default_max_in_flight(
                    p.calls(fcfg),
                    !delivery.outputs.is_empty(),
                    p.trigger.unacked_limit(),
                )
            })
            .max(1);
        if let Some(w) = p.prefetch_below(fcfg) {
            tracing::warn!(
                pipeline = %name,
                max_in_flight = w.max_in_flight,
                prefetch = w.prefetch,
                "{}",
                crate::config::PrefetchBelow::ADVICE
            );
        }
        let limits = engine::dispatch::Limits {
            max_in_flight,
            max_jobs: max_in_flight.div_ceil(max_events),
            max_events,
            max_wait: p.batch.max_wait.get(),
            ordering: p.ordering.unwrap_or_else(|| p.trigger.default_ordering()),
        };
        if limits.ordering != Ordering::None {
            tracing::debug!(pipeline = %name, ordering = ?limits.ordering, "ordered delivery");
        }
        let stop = self.drain.child_token();
        let (tx, rx) = mpsc::channel(limits.max_in_flight.min(1024));
        let cx = TriggerContext {
            pipeline: name.to_string(),
            events: tx,
            shutdown: stop.child_token(),
            health: self
                .health
                .register(format!("pipelines.{name}.trigger"), "starting"),
            max_body: self.fixed.max_body,
            body_timeout: self.fixed.body_timeout,
        };
        let trigger = p
            .trigger
            .build(cx)
            .map_err(|e| format!("pipelines.{name}.trigger: {e}"))?;
        if let Some(r) = trigger.routes {
            self.ingress.set(name, Some(r));
        }
        let (task, fatal, token, pname) = (
            trigger.task,
            self.fatal.clone(),
            stop.clone(),
            name.to_string(),
        );
        let trigger = tokio::spawn(async move {
            match task.await {
                Ok(()) if !token.is_cancelled() => {
                    tracing::info!(pipeline = %pname, "trigger finished")
                }
                Ok(()) => {}
                Err(e) if token.is_cancelled() => {
                    tracing::warn!(pipeline = %pname, error = %e, "trigger failed while draining")
                }
                Err(e) => {
                    let _ = fatal.send((pname, e.to_string()));
                }
            }
        });
        let (fatal, pname) = (self.fatal.clone(), name.to_string());
        let drain = stop.child_token();
        let dispatcher = tokio::spawn(async move {
            if let Err(e) = run_dispatcher(delivery, rx, limits, drain).await {
                let _ = fatal.send((pname, e));
            }
        });
        tracing::info!(pipeline = %name, trigger = p.trigger.type_name(), function = %p.function, "pipeline started");
        Ok(RunningPipeline {
            stop,
            trigger,
            dispatcher,
        })
    }

    /// Drain every pipeline within `shutdown_timeout`, then stop the functions.
    async fn shutdown(mut self) {
        self.drain.cancel();
        tokio::spawn(async {
            let sig = shutdown_signal().await;
            tracing::warn!(signal = sig, "second signal: exiting at once");
            std::process::exit(1);
        });
        let timeout = self.fixed.shutdown_timeout;
        let pipelines = std::mem::take(&mut self.pipelines);
        let aborts: Vec<_> = pipelines
            .values()
            .map(|p| p.dispatcher.abort_handle())
            .collect();
        let finished = tokio::time::timeout(timeout, async {
            futures::future::join_all(pipelines.into_values().map(|p| async move {
                let _ = p.trigger.await;
                let _ = p.dispatcher.await;
            }))
            .await;
            if let Some(server) = self.ingress.server.take() {
                let _ = server.await;
            }
        })
        .await;
        if finished.is_err() {
            tracing::warn!(timeout = ?timeout, "shutdown_timeout reached; unfinished events are left unacknowledged");
            for a in aborts {
                a.abort();
            }
        }
        for (_, f) in std::mem::take(&mut self.functions) {
            f.stop().await;
        }
        tracing::info!("stopped");
    }
}

impl RunningFunction {
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

impl RunningPipeline {
    /// Stop taking events and finish the held ones, as a shutdown does, within `timeout`.
    async fn drain(self, name: &str, timeout: Duration) {
        self.stop.cancel();
        let abort = self.dispatcher.abort_handle();
        let done = tokio::time::timeout(timeout, async {
            let _ = self.trigger.await;
            let _ = self.dispatcher.await;
        })
        .await;
        match done {
            Ok(()) => tracing::info!(pipeline = %name, "pipeline drained"),
            Err(_) => {
                tracing::warn!(pipeline = %name, timeout = ?timeout, "drain timed out; unfinished events are left unacknowledged");
                abort.abort();
            }
        }
    }
}

/// Start (or, for a `url`, watch) a function and build its shared service.
async fn start_function(
    health: &Health,
    name: &str,
    f: &FunctionConfig,
) -> Result<RunningFunction, BoxError> {
    let fh = health.register(format!("functions.{name}"), "starting");
    let stop = CancellationToken::new();
    let task = match &f.command {
        Some(cmd) => {
            let sup = Supervisor::new(name, cmd.clone(), f.env.clone().into_iter().collect(), fh)?;
            let service = invoker::function_service(name, f, sup.url())?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(sup.run(stop.clone(), tx));
            if tokio::time::timeout(Duration::from_secs(60), rx)
                .await
                .is_err()
            {
                tracing::warn!(function = %name, "function not accepting connections yet; events will be retried");
            }
            return Ok(RunningFunction {
                service,
                stop,
                task,
            });
        }
        None => reqwest::Url::parse(f.url.as_deref().unwrap_or_default())?,
    };
    let service = invoker::function_service(name, f, task.clone())?;
    let task = tokio::spawn(probe_function(task, fh, stop.clone()));
    Ok(RunningFunction {
        service,
        stop,
        task,
    })
}

/// Build and check a pipeline's outputs and dead letter.
async fn build_parts(name: &str, p: &PipelineConfig) -> Result<Parts, BoxError> {
    let mut outputs = Vec::new();
    for o in &p.outputs {
        let output = o
            .output
            .build()
            .await
            .map_err(|e| format!("pipelines.{name}.outputs.{}: {e}", o.name))?;
        let healthy = output.healthcheck().await.map_err(|e| e.to_string());
        outputs.push((
            NamedOutput {
                name: o.name.clone(),
                output,
            },
            healthy,
        ));
    }
    let dead_letter = match &p.dead_letter {
        Some(d) => Some(
            d.build()
                .await
                .map_err(|e| format!("pipelines.{name}.dead_letter: {e}"))?,
        ),
        None => None,
    };
    Ok(Parts {
        outputs,
        dead_letter,
    })
}

/// The shared ingress server: started when a pipeline first needs it; the routes it serves
/// change with the pipelines, without closing connections.
struct Ingress {
    listen: SocketAddr,
    limits: crate::ingress::Limits,
    routes: BTreeMap<String, axum::Router>,
    current: Arc<RwLock<axum::Router>>,
    server: Option<JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl Ingress {
    fn new(config: &Config, shutdown: CancellationToken) -> Self {
        Self {
            listen: config.ingress.listen,
            limits: crate::ingress::Limits {
                header_timeout: config.ingress.header_timeout.get(),
                max_connections: config.ingress.max_connections.max(1),
            },
            routes: BTreeMap::new(),
            current: Arc::default(),
            server: None,
            shutdown,
        }
    }

    async fn start(&mut self) -> Result<(), BoxError> {
        if self.server.is_some() {
            return Ok(());
        }
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|e| format!("ingress.listen {}: {e}", self.listen))?;
        tracing::info!(listen = %self.listen, "ingress server listening");
        let current = self.current.clone();
        // Every request is routed by the routes of the moment.
        let app = axum::Router::new().fallback_service(tower::service_fn(
            move |req: axum::extract::Request| {
                let router = current.read().unwrap_or_else(|e| e.into_inner()).clone();
                router.oneshot(req)
            },
        ));
        self.server = Some(tokio::spawn(crate::ingress::serve(
            listener,
            app,
            self.limits,
            self.shutdown.clone(),
        )));
        Ok(())
    }

    /// Serve a pipeline's routes, or stop serving them (`None`).
    fn set(&mut self, pipeline: &str, routes: Option<axum::Router>) {
        match routes {
            Some(r) => self.routes.insert(pipeline.to_string(), r),
            None => self.routes.remove(pipeline),
        };
        // The config check refuses two pipelines on one path, so the merge cannot overlap.
        let merged = self
            .routes
            .values()
            .cloned()
            .fold(axum::Router::new(), axum::Router::merge);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = merged;
    }
}

/// Polls the config file; a changed content (not only a touched file) is a change. Polling
/// also sees a Kubernetes ConfigMap update, which swaps a symlink rather than writing the file.
struct FileWatch {
    path: PathBuf,
    every: Duration,
    last: Option<Vec<u8>>,
}

impl FileWatch {
    fn new(s: &Source) -> Self {
        Self {
            path: s.path.clone(),
            every: s.watch.unwrap_or(Duration::MAX),
            last: std::fs::read(&s.path).ok(),
        }
    }

    async fn changed(&mut self) {
        if self.every == Duration::MAX {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(self.every).await;
            let now = tokio::fs::read(&self.path).await.ok();
            // A file that is briefly missing (an editor saving) is not a change.
            if now.is_some() && now != self.last {
                self.last = now;
                return;
            }
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
async fn probe_function(
    url: reqwest::Url,
    health: switchyard_sdk::health::HealthHandle,
    stop: CancellationToken,
) {
    let host = url.host_str().unwrap_or("127.0.0.1").to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    while !stop.is_cancelled() {
        match tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => health.ready(),
            _ => health.not_ready(format!("cannot connect to the function at {host}:{port}")),
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// The events a pipeline holds when it does not set `max_in_flight`. `concurrency` (times
/// `batch.max_events`) bounds the calls; with outputs it holds twice that, so the outputs of
/// finished calls are written while the next calls run (docs/benchmarks.md: a Kafka output,
/// whose writes wait for the broker's acks, drained 1.18-1.49 times as fast). Never more than
/// the trigger delivers unacknowledged (RabbitMQ's `prefetch`): an engine that can never fill
/// takes each delivery alone, which cost 14-20% more CPU per message for no more throughput.
fn default_max_in_flight(calls: usize, has_outputs: bool, unacked: Option<usize>) -> usize {
    let wanted = if has_outputs { 2 * calls } else { calls };
    unacked.map_or(wanted, |limit| wanted.min(limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_str_with_source, Env};

    fn load(pipelines: &str, fn_timeout: &str) -> Loaded {
        let src = format!(
            "functions:\n  f: {{ url: \"http://127.0.0.1:1\", timeout: {fn_timeout} }}\n  g: {{ url: \"http://127.0.0.1:2\" }}\npipelines:\n{pipelines}"
        );
        load_str_with_source(&src, "t.yaml", &Env).unwrap()
    }

    #[test]
    fn the_default_holds_twice_the_calls_with_outputs_and_never_more_than_the_trigger_leaves_unacked(
    ) {
        assert_eq!(
            default_max_in_flight(64, true, None),
            128,
            "outputs overlap calls"
        );
        assert_eq!(
            default_max_in_flight(64, false, None),
            64,
            "nothing to overlap"
        );
        assert_eq!(default_max_in_flight(64, true, Some(64)), 64, "prefetch 64");
        assert_eq!(default_max_in_flight(64, true, Some(100)), 100);
        assert_eq!(
            default_max_in_flight(64, false, Some(32)),
            32,
            "prefetch below concurrency"
        );
        assert_eq!(default_max_in_flight(64, true, Some(1000)), 128);
    }

    const A: &str = "  a: { trigger: { type: http, path: /a }, function: f }\n";
    const B: &str = "  b: { trigger: { type: http, path: /b }, function: g }\n";
    const B2: &str = "  b: { trigger: { type: http, path: /b2 }, function: g }\n";
    const C: &str = "  c: { trigger: { type: http, path: /c }, function: g }\n";

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn start_up_starts_everything() {
        let new = load(&format!("{A}{B}"), "5s");
        let plan = Plan::new(None, &new);
        assert_eq!(plan.start_functions, set(&["f", "g"]));
        assert_eq!(plan.start_pipelines, set(&["a", "b"]));
        assert!(plan.stop_pipelines.is_empty() && plan.stop_functions.is_empty());
    }

    #[test]
    fn only_what_changed_is_restarted() {
        let old = load(&format!("{A}{B}"), "5s");
        assert!(Plan::new(Some(&old), &load(&format!("{A}{B}"), "5s")).is_empty());
        // b changed, c added, a untouched.
        let plan = Plan::new(Some(&old), &load(&format!("{A}{B2}{C}"), "5s"));
        assert_eq!(plan.stop_pipelines, set(&["b"]));
        assert_eq!(plan.start_pipelines, set(&["b", "c"]));
        assert!(plan.start_functions.is_empty());
        // b removed.
        let plan = Plan::new(Some(&old), &load(A, "5s"));
        assert_eq!(plan.stop_pipelines, set(&["b"]));
        assert!(plan.start_pipelines.is_empty());
    }

    #[test]
    fn a_changed_function_restarts_its_pipelines() {
        let old = load(&format!("{A}{B}"), "5s");
        let plan = Plan::new(Some(&old), &load(&format!("{A}{B}"), "7s"));
        assert_eq!(plan.stop_functions, set(&["f"]));
        assert_eq!(plan.start_functions, set(&["f"]));
        assert_eq!(plan.stop_pipelines, set(&["a"]));
        assert_eq!(plan.start_pipelines, set(&["a"]));
    }
}
