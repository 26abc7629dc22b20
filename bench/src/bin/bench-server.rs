//! The shipped HTTP stack serving a store on a manual clock, for the wrk benchmarks.
//!
//! `bench-server [--prefill N] [--rotation-grace SECONDS] [--metrics] [--state-file PATH]
//! [--api-key KEY]`: listens on a free port on
//! 127.0.0.1 (logged as `listening on 127.0.0.1:PORT`), tokens live 2 h; with a rotation
//! grace if asked (for the grace on/off A/B). `--prefill N` files N tokens before
//! listening and moves the clock so they have 60 s left; on SIGUSR1 the clock jumps 120 s,
//! so exactly those expire, and the store is purged as the shipped purge loop does it
//! (shard by shard on the request workers), timing each shard's sweep (`PURGE ...` on
//! stdout). With `--state-file PATH`, every change after the prefill is appended to the
//! shipped journal (`PATH.journal`, fsynced every second) as `token-server --state-file`
//! does, and SIGUSR2 writes a snapshot there through the shipped writer, rotating the
//! journal (`SNAPSHOT ...` on stdout when it is on disk). SIGINT/SIGTERM stop it.
//! `--metrics` counts every request into the shipped Prometheus metrics (and serves
//! `/metrics`), to measure what counting costs.
//! `--api-key KEY` requires `Authorization: Bearer KEY` on every request, as
//! `--api-keys` does. `--tls-cert PEM --tls-key PEM` serves HTTPS through the shipped
//! TLS listener, as `token-server --tls-cert … --tls-key …` does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use token_server::connections::Listener;
use token_server::journal::{Journal, JournalFsync};
use token_server::metrics::Metrics;
use token_server::observer::Observer;
use token_server::{purge, server, shutdown, state};
use token_server_bench::{percentile, tls_from_args, value_after, PurgeTimes, BENCH_META};
use token_server_core::auth::ApiKeys;
use token_server_core::protocol::Service;
use token_server_core::session::SessionRules;
use token_server_core::{ManualClock, Meta, OsRandom, TokenStore};

const LIFETIME: Duration = Duration::from_secs(2 * 3600);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let prefill: usize = value_after(&args, "--prefill")
        .map(|v| v.parse().expect("--prefill takes a count"))
        .unwrap_or(0);
    let state_file = value_after(&args, "--state-file").map(std::path::PathBuf::from);
    let grace: Option<u64> = value_after(&args, "--rotation-grace")
        .map(|v| v.parse().expect("--rotation-grace takes seconds"));
    let metrics = args.iter().any(|a| a == "--metrics");
    let api_key = value_after(&args, "--api-key")
        .map(|key| ApiKeys::parse(key).expect("--api-key takes a key of 32+ characters"));
    let tls = tls_from_args(&args).map(Arc::new);
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    let clock = ManualClock::new(1_700_000_000_000);
    let rules = SessionRules {
        rotation_grace: grace.map(Duration::from_secs),
        ..SessionRules::new(LIFETIME)
    };
    let mut store = TokenStore::new(LIFETIME, clock.clone(), OsRandom).with_rules(rules);
    if prefill > 0 {
        let meta = Meta::from_json(BENCH_META).expect("bench meta is JSON");
        for _ in 0..prefill {
            store.create(meta.clone()).expect("create");
        }
        clock.advance(LIFETIME - Duration::from_secs(60));
        log::info!("prefilled {prefill} tokens, 60 s left");
    }
    // After the prefill, which stands for sessions loaded at start (not journaled).
    let journal = state_file.as_ref().map(|path| {
        let journal = Journal::open(path, JournalFsync::EverySecond).expect("open the journal");
        journal.resume(0).expect("start the journal");
        Arc::new(journal)
    });
    if let Some(journal) = &journal {
        store = store.with_change_sink(Box::new(journal.clone()));
    }
    let mut service = Service::new(store);
    if let Some(keys) = api_key {
        service = service.with_api_keys(keys);
    }
    let service = Arc::new(service);
    let observer = Arc::new(Observer::new(metrics.then(|| {
        let sessions = service.clone();
        Metrics::new(false).with_sessions(move || sessions.store().held())
    })));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        tokio::spawn(purge_on_sigusr1(service.clone(), clock));
        let _fsync = journal.clone().and_then(Journal::spawn_fsync);
        if let (Some(path), Some(journal)) = (state_file, journal) {
            tokio::spawn(snapshot_on_sigusr2(service.clone(), path, journal));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let listener = Listener::maybe_tls(listener, tls);
        let serving = server::Serving {
            observer,
            ..server::Serving::default()
        };
        server::run(listener, service, serving, shutdown::signal())
            .await
            .expect("serve");
    });
}

async fn purge_on_sigusr1(service: Arc<Service<ManualClock, OsRandom>>, clock: ManualClock) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = signal(SignalKind::user_defined1()).expect("SIGUSR1 handler");
    while usr1.recv().await.is_some() {
        clock.advance(Duration::from_secs(120));
        // The shipped purge pacing (one shard per step, yielding between steps on the
        // request workers), with each step timed.
        let started = Instant::now();
        let mut times = PurgeTimes::default();
        let store = service.store();
        purge::purge_shards(store.shard_count(), |index| times.step(store, index)).await;
        let total = started.elapsed();
        let p99_shard = percentile(&mut times.hold, 99.0);
        let max_shard = percentile(&mut times.hold, 100.0);
        let max_cpu = percentile(&mut times.hold_cpu, 100.0);
        let max_free = percentile(&mut times.free, 100.0);
        let (purged, remaining) = (times.purged, store.len());
        println!(
            "PURGE purged={purged} remaining={remaining} total_ms={:.1} p99_shard_us={:.0} max_shard_us={:.0} max_shard_cpu_us={:.0} max_free_us={:.0}",
            total.as_secs_f64() * 1e3,
            p99_shard.as_secs_f64() * 1e6,
            max_shard.as_secs_f64() * 1e6,
            max_cpu.as_secs_f64() * 1e6,
            max_free.as_secs_f64() * 1e6
        );
    }
}

async fn snapshot_on_sigusr2(
    service: Arc<Service<ManualClock, OsRandom>>,
    path: std::path::PathBuf,
    journal: Arc<Journal>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr2 = signal(SignalKind::user_defined2()).expect("SIGUSR2 handler");
    let snapshots = state::Snapshots::new(path).with_journal(journal);
    while usr2.recv().await.is_some() {
        let started = Instant::now();
        match snapshots.write(service.store()).await {
            Ok(count) => println!(
                "SNAPSHOT tokens={count} total_ms={:.1}",
                started.elapsed().as_secs_f64() * 1e3
            ),
            Err(err) => println!("SNAPSHOT failed: {err}"),
        }
    }
}
