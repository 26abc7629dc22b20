//! `token-server`: the REST service of the token store, for operators.
//!
//! This file only wires things together: parse the command line, start logging, bind,
//! serve ([`server::run`]) while the state file loads, then start the purge and snapshot
//! loops and say ready ([`lifecycle`]); on a stop, drain and save.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use token_server::clock::ServerClock;
use token_server::connections::{ConnectionLimits, Listener, StopDeadline};
use token_server::journal::{journal_path, Journal};
use token_server::metrics::Metrics;
use token_server::observer::Observer;
use token_server::redis_store::RedisStore;
use token_server::tls::{self, Tls};
use token_server::{
    api_keys, cli, fd_limit, lifecycle, logging, purge, server, shutdown, sighup, state,
};
use token_server_core::protocol::{Readiness, Service, DUMP_LOG_TARGET};
use token_server_core::session::SessionRules;
use token_server_core::{MetaLimits, OsRandom, TokenStore};

fn main() -> ExitCode {
    let config = match cli::parse(std::env::args_os().skip(1)) {
        Ok(cli::Command::Run(config)) => *config,
        Ok(cli::Command::Help) => {
            print!("{}", cli::help());
            return ExitCode::SUCCESS;
        }
        Ok(cli::Command::Version) => {
            println!("token-server {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("token-server: {err}");
            eprintln!("Try 'token-server --help' for the options and their ranges.");
            return ExitCode::from(2);
        }
    };

    logging::init(config.log_format);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            log::error!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config))
}

async fn serve(config: cli::Config) -> ExitCode {
    // Why a start is refused goes out in the log's format, whatever RUST_LOG hides.
    let log_format = config.log_format;
    // First of all: a bad certificate should stop the start before anything is opened.
    let tls = match config.tls.clone().map(Tls::load).transpose() {
        Ok(tls) => tls.map(Arc::new),
        Err(err) => {
            logging::fatal(
                log_format,
                &format!("{err}\nRefusing to start: fix the file, or leave out the --tls-* flags to serve plain HTTP."),
            );
            return ExitCode::FAILURE;
        }
    };
    // Expiry runs on the monotonic clock anchored to the wall clock once (a wall clock
    // stepped while running neither revives nor kills sessions), or on the test clock.
    let clock = ServerClock::new(config.test_clock);
    if config.test_clock {
        log::warn!(
            "--test-clock is on: time stands still unless POST /test-clock/advance or /test-clock/set moves it; for tests only, never in production"
        );
    }
    let rules = SessionRules {
        rotation_grace: config.rotation_grace,
        revoke_on_reuse: config.revoke_on_reuse,
        max_session_lifetime: config.max_session_lifetime,
        ..SessionRules::new(config.token_lifetime)
    };
    if rules.revoke_on_reuse && rules.rotation_grace.is_none() {
        log::warn!(
            "--revoke-on-reuse without --rotation-grace: two parallel requests with one token will end its session"
        );
    }
    let mut journal = None;
    if let Some(path) = &config.state_file {
        if let Err(err) = state::check_writable(path) {
            logging::fatal(
                log_format,
                &format!("{err}\nRefusing to start: no snapshot could be saved."),
            );
            return ExitCode::FAILURE;
        }
        match Journal::open(path, config.journal_fsync) {
            Ok(opened) => journal = Some(Arc::new(opened)),
            Err(err) => {
                logging::fatal(
                    log_format,
                    &format!(
                        "cannot open the journal {}: {err}\nRefusing to start: changes between snapshots could not be kept.",
                        journal_path(path).display()
                    ),
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let mut store = TokenStore::new(config.token_lifetime, clock.clone(), OsRandom)
        .with_rules(rules)
        .with_max_tokens(config.max_tokens)
        .with_meta_limits(MetaLimits {
            max_bytes: config.max_meta_bytes,
            ..MetaLimits::default()
        });
    if let Some(journal) = &journal {
        store = store.with_change_sink(Box::new(journal.clone()));
    }
    let session_store = match &config.redis {
        None => server::SessionStore::Memory,
        Some(redis) => match RedisStore::connect(redis).await {
            Ok(store) => {
                if !store.ping().await {
                    log::warn!(
                        "Redis does not answer yet: requests get 503 (session store unavailable) until it does"
                    );
                }
                log::info!(
                    "sessions in Redis (prefix {:?}); no purge loop runs: Redis expires each session itself (PEXPIREAT)",
                    redis.prefix
                );
                server::SessionStore::Redis(Arc::new(store))
            }
            Err(err) => {
                logging::fatal(log_format, &format!("cannot use Redis: {err}"));
                return ExitCode::FAILURE;
            }
        },
    };
    fd_limit::raise_for(config.max_connections);
    // Bound before the state file loads, so probes answer during a long load.
    let address = SocketAddr::new(config.bind, config.port);
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(err) => {
            log::error!("cannot listen on {address}: {err}");
            return ExitCode::FAILURE;
        }
    };
    if config.dump && !log::log_enabled!(target: DUMP_LOG_TARGET, log::Level::Info) {
        log::warn!(
            "--dump is on, but the log level hides the dump; set RUST_LOG={DUMP_LOG_TARGET}=info"
        );
    }
    let mut service = Service::new(store)
        .with_dump(config.dump)
        .with_max_body_bytes(config.max_body_bytes)
        .with_readiness(Readiness::Loading);
    if let Some(test_clock) = clock.test_clock() {
        service = service.with_test_clock(test_clock);
    }
    if let Some(file) = &config.api_keys {
        log::info!(
            "api keys from {}: {}",
            file.path.display(),
            api_keys::describe(&file.keys)
        );
        service = service.with_api_keys(file.keys.clone());
    }
    if let Some(tls) = &tls {
        log::info!("TLS: {}", tls.describe());
    }
    if let Some(warning) =
        tls::exposure_warning(config.bind, config.api_keys.is_some(), config.tls.as_ref())
    {
        log::warn!("{warning}");
    }
    let service = Arc::new(service);
    // Registered before serving, so a SIGHUP right after start cannot kill the process.
    let key_reload = match &config.api_keys {
        Some(file) => match api_keys::reload_on_sighup(service.clone(), file.path.clone()) {
            Ok(task) => Some(task),
            Err(err) => {
                log::error!("cannot listen for SIGHUP to reload the API keys: {err}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let tls_reload = match &tls {
        Some(tls) => match tls::reload_on_sighup(tls.clone()) {
            Ok(task) => Some(task),
            Err(err) => {
                log::error!("cannot listen for SIGHUP to reload the TLS certificate: {err}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    // With nothing to reload, SIGHUP (what `systemctl reload` sends) must still not end
    // the process by its default action, taking the sessions with it.
    let idle_reload = if key_reload.is_none() && tls_reload.is_none() {
        match sighup::on_sighup(|| {
            log::info!("SIGHUP: nothing to reload (no --api-keys, no --tls-cert)")
        }) {
            Ok(task) => Some(task),
            Err(err) => {
                log::error!("cannot listen for SIGHUP: {err}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let mut metrics = Metrics::new(config.state_file.is_some());
    // Redis cannot count this prefix's sessions cheaply: no gauge rather than a wrong 0.
    if let server::SessionStore::Memory = session_store {
        let sessions = service.clone();
        metrics = metrics.with_sessions(move || sessions.store().held());
    }
    let observer = Arc::new(Observer::new(Some(metrics)));
    let snapshots = config.state_file.clone().map(|path| {
        let snapshots = state::Snapshots::new(path).with_observer(observer.clone());
        Arc::new(match &journal {
            Some(journal) => snapshots.with_journal(journal.clone()),
            None => snapshots,
        })
    });
    let abort = Arc::new(tokio::sync::Notify::new());
    let stop_deadline = StopDeadline::default();
    let shutdown = lifecycle::drain_after(
        shutdown::signal(),
        abort.clone(),
        service.clone(),
        observer.clone(),
        config.shutdown_timeout,
        stop_deadline.clone(),
    );
    let limits = ConnectionLimits {
        stop_deadline: Some(stop_deadline),
        ..ConnectionLimits::from(&config)
    };
    let in_redis = matches!(session_store, server::SessionStore::Redis(_));
    let listener = Listener::maybe_tls(listener, tls);
    let serving = server::run(
        listener,
        service.clone(),
        server::Serving {
            store: session_store,
            observer: observer.clone(),
            limits,
        },
        shutdown,
    );
    let starting = async {
        if let (Some(path), Some(journal)) = (&config.state_file, &journal) {
            // Off the request workers: a large file takes seconds, and probes answer meanwhile.
            let (loading, file, replaying) = (service.clone(), path.clone(), journal.clone());
            let loaded = tokio::task::spawn_blocking(move || {
                state::load_journaled(&file, loading.store(), &replaying)
            })
            .await;
            let failure = match loaded {
                Ok(Ok(loaded)) => {
                    log::info!(
                        "loaded {} live tokens from {} and {} journal records",
                        loaded.sessions,
                        path.display(),
                        loaded.records
                    );
                    None
                }
                Ok(Err(err)) => Some(err.to_string()),
                Err(err) => Some(format!("loading the state file failed: {err}")),
            };
            if let Some(err) = failure {
                // Starting empty would silently log every user out: refuse instead.
                logging::fatal(
                    log_format,
                    &format!("{err}\nRefusing to start: repair the file, or move it away to start with no sessions."),
                );
                abort.notify_one();
                return None;
            }
        }
        // Redis expires sessions itself; the in-memory store holds none to purge.
        let purge = (!in_redis)
            .then(|| purge::spawn(service.clone(), config.purge_interval, observer.clone()));
        let periodic_snapshots = snapshots.as_ref().map(|snapshots| {
            snapshots
                .clone()
                .spawn_periodic(service.clone(), config.snapshot_interval)
        });
        let journal_fsync = journal.clone().and_then(Journal::spawn_fsync);
        lifecycle::ready(&service);
        Some((purge, periodic_snapshots, journal_fsync))
    };
    // The loops' guards stay inside the join until serving ends, then stop the loops.
    let (served, started) = tokio::join!(serving, starting);
    if started.is_none() {
        return ExitCode::FAILURE;
    }
    drop((started, key_reload, tls_reload, idle_reload));
    let mut status = ExitCode::SUCCESS;
    if let Err(err) = served {
        log::error!("{err}");
        status = ExitCode::FAILURE;
    }
    if let Some(snapshots) = &snapshots {
        // Waits for a periodic snapshot still writing: one writer at a time.
        match snapshots.write(service.store()).await {
            Ok(count) => log::info!(
                "saved {count} live tokens to {}",
                snapshots.path().display()
            ),
            Err(err) => {
                log::error!("{err}");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}
