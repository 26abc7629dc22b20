//! Core micro-benchmarks (issue 4, targets 3, 4 and 5): ns per create, rotate, remove and
//! purged token, RSS per live token (and per session with a rotation grace in use), the
//! cost of a rotation with a grace, and shard-by-shard purge of a store whose tokens all
//! expire together while another thread keeps rotating.
//!
//! `core-micro [--tokens N] [--ops M]`; prints `FIGURE name value unit` lines.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use token_server_bench::{figure, percentile, purge_timed, rss_kib, BENCH_META};
use token_server_core::auth::ApiKeys;
use token_server_core::session::SessionRules;
use token_server_core::{ManualClock, Meta, OsRandom, Token, TokenSource, TokenStore};

const LIFETIME: Duration = Duration::from_secs(2 * 3600);
const START_MS: u64 = 1_700_000_000_000;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("numeric argument"))
        .unwrap_or(default)
}

/// The rules with a rotation grace (the rest as the seed's).
fn grace_rules() -> SessionRules {
    SessionRules {
        rotation_grace: Some(Duration::from_secs(30)),
        ..SessionRules::new(LIFETIME)
    }
}

fn ns_per(elapsed: Duration, n: usize) -> f64 {
    elapsed.as_nanos() as f64 / n.max(1) as f64
}

fn main() {
    let tokens = arg("--tokens", 1_000_000);
    let ops = arg("--ops", 200_000);
    let meta = Meta::from_json(BENCH_META).expect("bench meta is JSON");

    // Target 3 first, while the heap is still small: RSS growth per live token.
    {
        let clock = ManualClock::new(START_MS);
        let store = TokenStore::new(LIFETIME, clock.clone(), OsRandom);
        let before = rss_kib().expect("VmRSS");
        for _ in 0..tokens {
            store.create(meta.clone()).expect("create");
        }
        let after = rss_kib().expect("VmRSS");
        let per_token = (after.saturating_sub(before) * 1024) as f64 / tokens as f64;
        figure("core_rss_bytes_per_token", per_token, "B");

        // The same with a rotation grace in use: each session rotated once inside its
        // grace, so each holds one sealed predecessor. Measured while the first store is
        // still alive, so its memory cannot be reused and hide the growth.
        let clock = ManualClock::new(START_MS);
        let store = TokenStore::new(LIFETIME, clock, OsRandom).with_rules(grace_rules());
        let before = rss_kib().expect("VmRSS");
        for _ in 0..tokens {
            // Rotated right away: no token is held by the benchmark, only by the store.
            let token = store.create(meta.clone()).expect("create");
            store.rotate(token.as_str(), None).expect("rotate");
        }
        let after = rss_kib().expect("VmRSS");
        let per_session = (after.saturating_sub(before) * 1024) as f64 / tokens as f64;
        figure("core_rss_bytes_per_session_in_grace", per_session, "B");
    }

    // What the 16 random bytes of one token cost (OsRandom draws them in blocks).
    let mut bytes = [0u8; 16];
    let started = Instant::now();
    for _ in 0..ops {
        OsRandom.fill(&mut bytes).expect("getrandom");
    }
    figure("core_random_ns", ns_per(started.elapsed(), ops), "ns/op");

    // What the API key check adds to each request (issue 15): a SHA-256 of the presented
    // key and a constant-time comparison with each of two configured keys.
    let key_a = "bench-key-a-0123456789abcdefghijklmnopqrstuv";
    let key_b = "bench-key-b-0123456789abcdefghijklmnopqrstuv";
    let keys = ApiKeys::parse(&format!("{key_a}\n{key_b}\n")).expect("bench keys parse");
    let header = format!("Bearer {key_b}");
    let started = Instant::now();
    for _ in 0..ops {
        keys.check(Some(std::hint::black_box(header.as_str())))
            .expect("the bench key is valid");
    }
    figure(
        "core_api_key_check_ns",
        ns_per(started.elapsed(), ops),
        "ns/op",
    );

    // Target 5: ns per operation, each token used exactly once.
    let clock = ManualClock::new(START_MS);
    let store = TokenStore::new(LIFETIME, clock.clone(), OsRandom);
    let started = Instant::now();
    let created: Vec<Token> = (0..ops)
        .map(|_| store.create(meta.clone()).expect("create"))
        .collect();
    figure("core_create_ns", ns_per(started.elapsed(), ops), "ns/op");

    let started = Instant::now();
    let rotated: Vec<Token> = created
        .iter()
        .map(|t| store.rotate(t.as_str(), None).expect("rotate").token)
        .collect();
    figure("core_rotate_ns", ns_per(started.elapsed(), ops), "ns/op");

    let update = serde_json::from_str(r#"{"year":2027}"#).expect("update is JSON");
    let started = Instant::now();
    let merged: Vec<Token> = rotated
        .iter()
        .map(|t| {
            store
                .rotate(t.as_str(), Some(serde_json::Map::clone(&update)))
                .expect("rotate")
                .token
        })
        .collect();
    figure(
        "core_rotate_merge_ns",
        ns_per(started.elapsed(), ops),
        "ns/op",
    );

    let started = Instant::now();
    for t in &merged {
        assert!(store.remove(t.as_str()));
    }
    figure("core_remove_ns", ns_per(started.elapsed(), ops), "ns/op");

    // Issue 12's like-for-like reference: a login from metadata held as JSON text (a
    // request body), made into Meta by the flat shortcut (the fastest native way, which
    // wasm's createJson takes too) and created. `core_create_ns` starts from a Meta made
    // once and cloned, so it leaves out the work createJson does on the text.
    let text_store = TokenStore::new(LIFETIME, clock.clone(), OsRandom);
    let limits = text_store.meta_limits();
    let started = Instant::now();
    for _ in 0..ops {
        let meta = Meta::from_flat_json(std::hint::black_box(BENCH_META), &limits)
            .expect("bench meta is flat")
            .expect("bench meta is within the limits");
        text_store.create(meta).expect("create");
    }
    figure(
        "core_create_from_text_ns",
        ns_per(started.elapsed(), ops),
        "ns/op",
    );
    drop(text_store);

    // A rotation with a grace period keeps a sealed predecessor: its extra cost.
    let grace_store = TokenStore::new(LIFETIME, clock.clone(), OsRandom).with_rules(grace_rules());
    let created: Vec<Token> = (0..ops)
        .map(|_| grace_store.create(meta.clone()).expect("create"))
        .collect();
    let started = Instant::now();
    for t in &created {
        grace_store.rotate(t.as_str(), None).expect("rotate");
    }
    figure(
        "core_rotate_grace_ns",
        ns_per(started.elapsed(), ops),
        "ns/op",
    );
    drop(grace_store);

    for _ in 0..ops {
        store.create(meta.clone()).expect("create");
    }
    clock.advance(LIFETIME);
    let started = Instant::now();
    let report = store.purge();
    assert_eq!(report.purged, ops);
    figure(
        "core_purge_ns_per_token",
        ns_per(started.elapsed(), ops),
        "ns/op",
    );
    drop(store);

    purge_under_rotation(tokens, &meta);
}

/// Target 4: `tokens` tokens expire together and are purged shard by shard while another
/// thread rotates a live chain of tokens, timing each rotation.
fn purge_under_rotation(tokens: usize, meta: &Meta) {
    let clock = ManualClock::new(START_MS);
    let store = Arc::new(TokenStore::new(LIFETIME, clock.clone(), OsRandom));
    for _ in 0..tokens {
        store.create(meta.clone()).expect("create");
    }
    // The chain is issued 60 s before the bulk expires, so it survives the purge.
    clock.advance(LIFETIME - Duration::from_secs(60));
    let chain = store.create(meta.clone()).expect("create");
    clock.advance(Duration::from_secs(120));

    let stop = Arc::new(AtomicBool::new(false));
    let rotator = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut token = chain;
            let mut samples = Vec::with_capacity(1 << 20);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                token = store.rotate(token.as_str(), None).expect("rotate").token;
                samples.push(started.elapsed());
            }
            samples
        })
    };
    // Let the rotator get going before the purge starts.
    std::thread::sleep(Duration::from_millis(20));
    let started = Instant::now();
    let mut times = purge_timed(&store);
    let purged = times.purged;

    let total = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut samples = rotator.join().expect("rotator thread");
    assert_eq!(purged, tokens);
    assert_eq!(store.len(), 1);

    figure("core_purge_total_ms", total.as_secs_f64() * 1e3, "ms");
    figure(
        "core_purge_p99_shard_us",
        percentile(&mut times.hold, 99.0).as_secs_f64() * 1e6,
        "us",
    );
    figure(
        "core_purge_max_shard_us",
        percentile(&mut times.hold, 100.0).as_secs_f64() * 1e6,
        "us",
    );
    figure(
        "core_purge_max_shard_cpu_us",
        percentile(&mut times.hold_cpu, 100.0).as_secs_f64() * 1e6,
        "us",
    );
    figure(
        "core_purge_max_free_us",
        percentile(&mut times.free, 100.0).as_secs_f64() * 1e6,
        "us",
    );
    figure("core_purge_rotations", samples.len() as f64, "ops");
    figure(
        "core_purge_rotate_p99_us",
        percentile(&mut samples, 99.0).as_secs_f64() * 1e6,
        "us",
    );
    figure(
        "core_purge_rotate_max_us",
        percentile(&mut samples, 100.0).as_secs_f64() * 1e6,
        "us",
    );
}
