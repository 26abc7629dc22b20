//! `token-server`: the REST service of the token store, for operators.
//!
//! This file only wires things together: parse the command line, start logging, bind,
//! and hand over to [`server::run`].

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use token_server::{cli, purge, server, shutdown, state};
use token_server_core::protocol::{Service, DUMP_LOG_TARGET};
use token_server_core::session::SessionRules;
use token_server_core::{OsRandom, SystemClock, TokenStore};

fn main() -> ExitCode {
    let config = match cli::parse(std::env::args_os().skip(1)) {
        Ok(cli::Command::Run(config)) => config,
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

    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("token_server=info"),
    )
    .init();

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
    let store = TokenStore::new(config.token_lifetime, SystemClock, OsRandom)
        .with_rules(rules)
        .with_max_tokens(config.max_tokens);
    if let Some(path) = &config.state_file {
        match state::load(path, &store) {
            Ok(count) => log::info!("loaded {count} live tokens from {}", path.display()),
            Err(err) => {
                // Starting empty would silently log every user out: refuse instead.
                eprintln!(
                    "token-server: {err}\nRefusing to start: repair the file, or move it away to start with no sessions."
                );
                return ExitCode::FAILURE;
            }
        }
    }
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
    let service = Arc::new(
        Service::new(store)
            .with_dump(config.dump)
            .with_max_body_bytes(config.max_body_bytes),
    );
    let purge = purge::spawn(service.clone(), config.purge_interval);
    let snapshots = config
        .state_file
        .clone()
        .map(|path| state::spawn_snapshots(service.clone(), path, config.snapshot_interval));
    let served = server::run(listener, service.clone(), shutdown::signal()).await;
    drop((purge, snapshots));
    let mut status = ExitCode::SUCCESS;
    if let Err(err) = served {
        log::error!("{err}");
        status = ExitCode::FAILURE;
    }
    if let Some(path) = &config.state_file {
        match state::save(path, service.store()) {
            Ok(count) => log::info!("saved {count} live tokens to {}", path.display()),
            Err(err) => {
                log::error!("{err}");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}
