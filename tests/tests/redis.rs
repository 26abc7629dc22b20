//! Several native instances sharing one Redis (`--redis`), and what Redis adds: sessions
//! that move between instances and survive restarts, one winner of racing rotations across
//! instances, 503 (never a hang) while Redis is down and service again once it is back,
//! nothing in Redis that is a token, TLS (`rediss://`) and Redis Cluster.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use token_server_tests::{redis_available, run_native, Host, RedisCluster, RedisServer, Server};

/// Whether this test can run: the native host, with redis-server installed.
fn runs(test: &str) -> bool {
    if Host::under_test() != Host::Native {
        eprintln!("skipped {test}: the Redis store is the native host's");
        return false;
    }
    if !redis_available() {
        eprintln!("skipped {test}: redis-server is not installed (tests/run-all.sh installs it)");
        return false;
    }
    true
}

/// The bytes a token spells (base64url without padding): its session id, then its secret.
fn base64url(token: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in token.bytes() {
        let value = ALPHABET
            .iter()
            .position(|&a| a == c)
            .expect("a base64url token");
        bits = (bits << 6) | value as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

fn token_of(answer: &serde_json::Value) -> Option<String> {
    answer["Ok"]["token"].as_str().map(str::to_string)
}

#[test]
fn instances_sharing_one_redis_share_every_session() {
    if !runs("instances_sharing_one_redis_share_every_session") {
        return;
    }
    let redis = RedisServer::start();
    let url = redis.url();
    let args = [
        "--redis",
        url.as_str(),
        "--rotation-grace",
        "5min",
        "--revoke-on-reuse",
        "--dump",
    ];
    let one = Server::start(&args);
    let two = Server::start(&args);

    // Made on one, rotated on the other, with the merged metadata.
    let a = one.login(json!({"user": "ann"}));
    let b_answer = two.rotate(&a, Some(json!({"year": 2026})));
    assert_eq!(b_answer["Ok"]["meta"], json!({"user": "ann", "year": 2026}));
    let b = token_of(&b_answer).unwrap();
    // The grace holds across them: a replay on the first instance gets the same successor.
    assert_eq!(token_of(&one.rotate(&a, None)).as_deref(), Some(b.as_str()));

    // 32 racing rotations spread over both instances: exactly one new token.
    let race = one.login(json!({"race": true}));
    let answers: Vec<serde_json::Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let server = if i % 2 == 0 { &one } else { &two };
                let race = race.clone();
                scope.spawn(move || server.rotate(&race, None))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let successors: std::collections::HashSet<String> =
        answers.iter().filter_map(token_of).collect();
    assert_eq!(
        successors.len(),
        1,
        "one successor for every racer in grace: {answers:?}"
    );

    // Revocation holds across them: a token presented after its grace, on the other
    // instance, ends the session everywhere.
    let strict_args = [
        "--redis",
        url.as_str(),
        "--redis-prefix",
        "strict:",
        "--rotation-grace",
        "1s",
        "--revoke-on-reuse",
    ];
    let strict_one = Server::start(&strict_args);
    let strict_two = Server::start(&strict_args);
    let first = strict_one.login(json!({}));
    let second = token_of(&strict_two.rotate(&first, None)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(strict_one.rotate(&first, None)["Err"], "InvalidToken");
    assert_eq!(strict_two.rotate(&second, None)["Err"], "InvalidToken");
    strict_one.wait_for_log("its session is ended", Duration::from_secs(5));

    // Restarting every instance loses nothing.
    let c = token_of(&two.rotate(&b, None)).unwrap();
    drop(one);
    drop(two);
    let one = Server::start(&args);
    let two = Server::start(&args);
    let d_answer = one.rotate(&c, None);
    assert_eq!(d_answer["Ok"]["meta"], json!({"user": "ann", "year": 2026}));
    let d = token_of(&d_answer).unwrap();
    assert!(token_of(&two.rotate(&d, None)).is_some());

    // The dump lists the sessions of both instances from Redis.
    let dump = one.request("HEAD", "/dump", None, b"");
    assert_eq!(dump.status, 202);
    one.wait_for_log(r#"meta={"user":"ann","year":2026}"#, Duration::from_secs(5));

    // Redis cannot count this prefix's sessions cheaply: no session gauge, not a wrong 0.
    let metrics = one.request("GET", "/metrics", None, b"");
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("token_server_logins_total"));
    assert!(
        !metrics.body.contains("token_server_sessions"),
        "{}",
        metrics.body
    );

    // Nothing in Redis is a token.
    let everything = redis.everything();
    assert!(!everything.is_empty());
    // A session's key is the prefix and its id in hex (which also checks the decoding of
    // tokens below).
    let id_hex: String = base64url(&d)[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert!(everything
        .iter()
        .any(|(key, _)| *key == format!("token-server:{id_hex}")));
    for token in [&a, &b, &c, &d, &race, &first, &second] {
        // Records are binary: neither the token's text nor its secret's bytes (in raw
        // bytes or in hex) may be in any of them.
        let secret = &base64url(token)[8..];
        let hex: String = secret.iter().map(|byte| format!("{byte:02x}")).collect();
        for (key, value) in &everything {
            for needle in [token.as_bytes(), secret, hex.as_bytes()] {
                assert!(
                    !key.as_bytes().windows(needle.len()).any(|w| w == needle)
                        && !value.windows(needle.len()).any(|w| w == needle),
                    "a token is in Redis: {key} = {value:?}"
                );
            }
        }
    }
    assert!(everything
        .iter()
        .all(|(key, _)| key.starts_with("token-server:")));
}

/// `INFO commandstats` calls of `command` (those a script makes count too).
fn calls(redis: &RedisServer, command: &str) -> u64 {
    let stats = redis.cli(&["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

#[test]
fn an_instance_deciding_on_its_own_last_write_is_never_fooled_by_a_change_elsewhere() {
    if !runs("an_instance_deciding_on_its_own_last_write_is_never_fooled_by_a_change_elsewhere") {
        return;
    }
    let redis = RedisServer::start();
    let url = redis.url();
    let args = ["--redis", url.as_str(), "--rotation-grace", "5min"];
    let one = Server::start(&args);
    let two = Server::start(&args);

    // A rotation on the instance that wrote the session last reads nothing back: one
    // round trip, the compare-and-set (whose own GET is the only one).
    let mut token = one.login(json!({"n": 0}));
    let (gets, scripts) = (calls(&redis, "get"), calls(&redis, "evalsha"));
    for _ in 0..5 {
        token = token_of(&one.rotate(&token, None)).unwrap();
    }
    assert_eq!(calls(&redis, "evalsha") - scripts, 5);
    assert_eq!(calls(&redis, "get") - gets, 5, "a GET besides the script's");

    // Rotated elsewhere: the first instance's copy is stale, and the old token is a
    // replay in grace (the same successor), not a second rotation.
    let a = one.login(json!({"user": "ann"}));
    let b = token_of(&two.rotate(&a, Some(json!({"year": 2026})))).unwrap();
    let replay = one.rotate(&a, None);
    assert_eq!(token_of(&replay).as_deref(), Some(b.as_str()));
    assert_eq!(replay["Ok"]["meta"], json!({"user": "ann", "year": 2026}));
    let c = token_of(&one.rotate(&b, None)).unwrap();
    assert!(token_of(&two.rotate(&c, None)).is_some());

    // Ended elsewhere: a replay in grace on the instance holding a copy in which it would
    // still answer (a decision that writes nothing, so no compare-and-set would catch it).
    let a = one.login(json!({}));
    let b = token_of(&one.rotate(&a, None)).unwrap();
    assert_eq!(
        two.json("DELETE", "/token", &json!({"token": b})).status,
        202
    );
    assert_eq!(one.rotate(&a, None), json!({"Err": "InvalidToken"}));
    assert_eq!(one.rotate(&b, None), json!({"Err": "InvalidToken"}));

    // Gone from Redis (expired, evicted, flushed): the copy answers nothing.
    let a = one.login(json!({}));
    redis.cli(&["FLUSHALL"]);
    assert_eq!(one.rotate(&a, None), json!({"Err": "InvalidToken"}));
}

#[test]
fn redis_down_answers_503_quickly_and_service_resumes_when_it_is_back() {
    if !runs("redis_down_answers_503_quickly_and_service_resumes_when_it_is_back") {
        return;
    }
    let mut redis = RedisServer::start();
    let url = redis.url();
    let server = Server::start(&["--redis", url.as_str(), "--redis-timeout", "500ms"]);
    let token = server.login(json!({}));
    redis.kill();
    let started = Instant::now();
    let refused = server.json("PUT", "/token", &json!({"token": token}));
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (503, "session store unavailable")
    );
    let login = server.json("POST", "/token", &json!({"meta": {}}));
    assert_eq!(login.status, 503);
    let ready = server.request("GET", "/readyz", None, b"");
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(ready.body.contains("session store unavailable"));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answers took {:?}",
        started.elapsed()
    );
    // Back (empty: the test's Redis persists nothing), with no restart of the server.
    redis.restart();
    logins_resume(&server);
    server.wait_until_ready(Duration::from_secs(30));
}

#[test]
fn a_frozen_redis_answers_503_within_the_timeout_and_service_resumes() {
    if !runs("a_frozen_redis_answers_503_within_the_timeout_and_service_resumes") {
        return;
    }
    let redis = RedisServer::start();
    let url = redis.url();
    let server = Server::start(&["--redis", url.as_str(), "--redis-timeout", "500ms"]);
    let token = server.login(json!({}));
    // Frozen, not gone: the connection stays open and nothing answers on it, so only the
    // timeout ends the wait (a killed Redis fails fast instead).
    redis.signal("STOP");
    let started = Instant::now();
    let refused = server.json("PUT", "/token", &json!({"token": token}));
    let login = server.json("POST", "/token", &json!({"meta": {}}));
    redis.signal("CONT");
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (503, "session store unavailable")
    );
    assert_eq!(login.status, 503, "{login:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answers took {:?}",
        started.elapsed()
    );
    // Redis answers again on the same connection: no restart of anything.
    logins_resume(&server);
}

#[test]
fn state_file_and_max_tokens_do_not_apply_with_redis() {
    if Host::under_test() != Host::Native {
        return;
    }
    for (flag, value, says) in [
        ("--state-file", "/tmp/never", "persistence"),
        ("--max-tokens", "10", "maxmemory"),
    ] {
        let exited = run_native(&["--redis", "redis://127.0.0.1:1/0", flag, value]);
        let stderr = exited.stderr;
        assert_eq!(exited.code, 2, "{flag}: {stderr}");
        assert!(stderr.contains(flag) && stderr.contains(says), "{stderr}");
    }
    assert_eq!(run_native(&["--redis", "http://127.0.0.1/"]).code, 2);
}

#[test]
fn sessions_work_on_a_redis_cluster() {
    if !runs("sessions_work_on_a_redis_cluster") {
        return;
    }
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let args = ["--redis-cluster", urls.as_str(), "--dump"];
    let one = Server::start(&args);
    let two = Server::start(&args);
    let mut tokens = Vec::new();
    for n in 0..30 {
        let token = one.login(json!({ "n": n }));
        tokens.push(token_of(&two.rotate(&token, None)).unwrap());
    }
    for token in &tokens {
        assert!(token_of(&one.rotate(token, None)).is_some());
    }
    // Spread over the primaries, one key per session.
    let per_node: Vec<usize> = cluster
        .nodes
        .iter()
        .map(|node| node.everything().len())
        .collect();
    assert_eq!(per_node.iter().sum::<usize>(), 30, "{per_node:?}");
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() >= 2,
        "{per_node:?}"
    );
    assert_eq!(one.request("HEAD", "/dump", None, b"").status, 202);
    one.wait_for_log("dump of 30 live tokens", Duration::from_secs(10));
}

#[test]
fn rediss_speaks_tls_to_a_redis_with_a_self_signed_certificate() {
    if !runs("rediss_speaks_tls_to_a_redis_with_a_self_signed_certificate") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("token-server-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    // A CA and a certificate for 127.0.0.1 signed by it (rustls refuses a CA certificate
    // used as the server's own).
    let openssl = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let made = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        &path("ca.key"),
        "-out",
        &path("ca.pem"),
    ]) && openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &path("key.pem"),
        "-out",
        &path("req.csr"),
    ]) && openssl(&[
        "x509",
        "-req",
        "-in",
        &path("req.csr"),
        "-CA",
        &path("ca.pem"),
        "-CAkey",
        &path("ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &path("ext"),
        "-out",
        &path("cert.pem"),
    ]);
    if !made {
        eprintln!("skipped the rediss test: openssl could not make the certificates");
        return;
    }
    let redis = RedisServer::start_with(&[
        "--tls-port",
        "PORT",
        "--tls-cert-file",
        &path("cert.pem"),
        "--tls-key-file",
        &path("key.pem"),
        "--tls-ca-cert-file",
        &path("ca.pem"),
        "--tls-auth-clients",
        "no",
    ]);
    // A build without TLS refuses the flags and never answers over TLS.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !redis
        .cli(&["--tls", "--cacert", &path("ca.pem"), "PING"])
        .contains("PONG")
    {
        if Instant::now() > deadline {
            eprintln!("skipped the rediss test: this redis-server does not answer over TLS (built without it?)");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("rediss://127.0.0.1:{}/0", redis.port);
    // rustls-native-certs trusts SSL_CERT_FILE: the test's self-signed certificate.
    let server = Server::start_with_env(
        &["--redis", url.as_str()],
        &[("SSL_CERT_FILE", path("ca.pem").as_str())],
    );
    let token = server.login(json!({"tls": true}));
    let next = server.rotate(&token, None);
    assert_eq!(next["Ok"]["meta"], json!({"tls": true}));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (30 s at most) until `server`, answering 503 while Redis was away, logs in and
/// rotates again, with no restart of anything.
fn logins_resume(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let login = server.json("POST", "/token", &json!({"meta": {"back": true}}));
        if login.status == 200 {
            assert!(token_of(&server.rotate(&login.body, None)).is_some());
            return;
        }
        assert_eq!(login.status, 503, "{login:?}");
        assert!(Instant::now() < deadline, "service did not resume");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_dump_lists_its_own_prefix_alone_when_another_prefix_starts_with_it() {
    if !runs("a_dump_lists_its_own_prefix_alone_when_another_prefix_starts_with_it") {
        return;
    }
    // Two deployments sharing one Redis (what --redis-prefix is for), one's prefix
    // starting with the other's.
    let redis = RedisServer::start();
    let url = redis.url();
    let production = Server::start(&["--redis", url.as_str(), "--dump"]);
    let staging = Server::start(&[
        "--redis",
        url.as_str(),
        "--redis-prefix",
        "token-server:staging:",
        "--dump",
    ]);
    production.login(json!({"who": "production"}));
    staging.login(json!({"who": "staging"}));
    // A key of some other application under the prefix, which is no session either.
    redis.cli(&["SET", "token-server:settings", "{}"]);

    assert_eq!(production.request("HEAD", "/dump", None, b"").status, 202);
    let count = production.wait_for_log("dump of", Duration::from_secs(10));
    production.wait_for_log(r#"meta={"who":"production"}"#, Duration::from_secs(10));
    let log = production.log();
    assert!(count.contains("dump of 1 live tokens"), "{log}");
    assert!(
        !log.contains("staging"),
        "another deployment's session: {log}"
    );
    assert!(!log.contains("unreadable"), "{log}");
}
