//! The journal beside the state file, over real HTTP and real signals: a kill -9 between
//! snapshots loses no answered change and revives no used or logged-out token; a torn last
//! record is ignored, a corrupt middle one refuses the start; snapshots shorten it again.
//! Native only: the edge hosts keep no state file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use token_server_tests::{run_native, Server};

const HEADER: &str = "token-server journal v1\n";

/// Whether the host under test is the native binary; says so when a test is skipped.
fn native_only() -> bool {
    token_server_tests::native_only("the journal is native-only")
}

/// A fresh folder for this test's files; returns the state file's path in it.
fn state_file(name: &str) -> PathBuf {
    let folder = std::env::temp_dir().join(format!(
        "token-server-journal-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).unwrap();
    folder.join("state")
}

fn journal_of(state: &Path) -> PathBuf {
    PathBuf::from(format!("{}.journal", state.display()))
}

/// A server on `state` that writes no periodic snapshot during a test, with `extra` flags.
fn start(state: &Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "--state-file",
        state.to_str().unwrap(),
        "--snapshot-interval",
        "24h",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// `PUT /token`: the new token and metadata, or `None` for `InvalidToken`.
fn exchange(server: &Server, token: &str, meta: Option<Value>) -> Option<(String, Value)> {
    let mut body = json!({ "token": token });
    if let Some(meta) = meta {
        body["meta"] = meta;
    }
    let response = server.json("PUT", "/token", &body);
    assert_eq!(response.status, 200, "{response:?}");
    let answer = response.json();
    if answer == json!({"Err": "InvalidToken"}) {
        return None;
    }
    let ok = &answer["Ok"];
    Some((
        ok["token"].as_str().unwrap().to_string(),
        ok["meta"].clone(),
    ))
}

fn logout(server: &Server, token: &str) {
    let response = server.json("DELETE", "/token", &json!({ "token": token }));
    assert_eq!(response.status, 202, "{response:?}");
}

/// Kills the server with SIGKILL (what dropping it does) and waits for it to be gone.
fn kill_9(server: Server) {
    drop(server);
}

/// Starts the binary on `state` expecting it to refuse; returns its exit code and stderr.
fn refused(state: &Path) -> (i32, String) {
    let exited = run_native(&["--port", "0", "--state-file", state.to_str().unwrap()]);
    (exited.code, exited.stderr)
}

#[test]
fn kill_9_between_snapshots_loses_no_answered_change_and_revives_no_used_token() {
    if !native_only() {
        return;
    }
    let state = state_file("kill");
    let server = start(&state, &[]);
    let kept = server.login(json!({"user": "kept"}));
    let exchanged = server.login(json!({"user": "exchanged"}));
    let logged_out = server.login(json!({"user": "logged out"}));
    let (successor, _) = exchange(&server, &exchanged, Some(json!({"year": 2026}))).unwrap();
    logout(&server, &logged_out);
    let many: Vec<String> = (0..200).map(|n| server.login(json!({ "n": n }))).collect();
    assert!(!state.exists(), "no snapshot was written in between");
    let journal = journal_of(&state);
    let mode = std::fs::metadata(&journal).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    kill_9(server);

    let restarted = start(&state, &[]);
    let log = restarted.wait_for_log("journal records", Duration::from_secs(30));
    assert!(log.contains("loaded 202 live tokens"), "{log}");
    assert_eq!(exchange(&restarted, &exchanged, None), None, "a used token");
    assert_eq!(
        exchange(&restarted, &logged_out, None),
        None,
        "a logged-out token"
    );
    let (_, meta) = exchange(&restarted, &successor, None).expect("the successor works");
    assert_eq!(meta, json!({"user": "exchanged", "year": 2026}));
    assert!(
        exchange(&restarted, &kept, None).is_some(),
        "an answered login"
    );
    for token in &many {
        assert!(exchange(&restarted, token, None).is_some());
    }
    // The restarted server journals on: a second kill -9 keeps the rotations just made.
    kill_9(restarted);
    let again = start(&state, &[]);
    for token in &many {
        assert_eq!(
            exchange(&again, token, None),
            None,
            "exchanged before the kill"
        );
    }
    assert_eq!(exchange(&again, &kept, None), None);
}

#[test]
fn kill_9_keeps_grace_replays_and_their_metadata() {
    if !native_only() {
        return;
    }
    let state = state_file("grace");
    let grace = ["--rotation-grace", "5min"];
    let server = start(&state, &grace);
    let graced = server.login(json!({"user": "graced"}));
    let (successor, _) = exchange(&server, &graced, None).unwrap();
    // A grace replay that changes the metadata: the same successor, the update kept.
    let (replayed, meta) = exchange(&server, &graced, Some(json!({"tab": 2}))).unwrap();
    assert_eq!(replayed, successor);
    assert_eq!(meta, json!({"user": "graced", "tab": 2}));
    kill_9(server);

    let restarted = start(&state, &grace);
    // Still inside its grace: the replay answers the same successor, metadata kept.
    let (again, meta) = exchange(&restarted, &graced, None).expect("a grace replay");
    assert_eq!(again, successor);
    assert_eq!(meta, json!({"user": "graced", "tab": 2}));
    let (next, _) = exchange(&restarted, &successor, None).unwrap();
    kill_9(restarted);
    let again = start(&state, &grace);
    assert!(exchange(&again, &next, None).is_some());
}

#[test]
fn a_torn_last_record_is_ignored_and_logged_and_cut_off() {
    if !native_only() {
        return;
    }
    let state = state_file("torn");
    let server = start(&state, &[]);
    let first = server.login(json!({"n": 1}));
    kill_9(server);
    let journal = journal_of(&state);
    let whole = std::fs::read(&journal).unwrap();
    // A record cut short by a crash: no newline at its end.
    let mut torn = whole.clone();
    torn.extend_from_slice(b"+ 0 00112233");
    std::fs::write(&journal, &torn).unwrap();

    let server = start(&state, &[]);
    let log = server.wait_for_log("cut short", Duration::from_secs(30));
    assert!(log.contains(&journal.display().to_string()), "{log}");
    assert!(log.contains("line 3"), "{log}");
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        whole,
        "the torn tail is cut off"
    );
    let (second, _) = exchange(&server, &first, None).unwrap();
    kill_9(server);
    // Had the tail stayed, the append would have made it a corrupt middle line.
    let server = start(&state, &[]);
    assert!(exchange(&server, &second, None).is_some());
}

#[test]
fn a_corrupt_record_before_the_last_refuses_the_start_naming_file_and_line() {
    if !native_only() {
        return;
    }
    let state = state_file("corrupt");
    let server = start(&state, &[]);
    server.login(json!({"n": 1}));
    server.login(json!({"n": 2}));
    kill_9(server);
    let journal = journal_of(&state);
    let text = std::fs::read_to_string(&journal).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let corrupt = format!("{}\n{}\n- x 00\n{}\n", lines[0], lines[1], lines[2]);
    std::fs::write(&journal, corrupt).unwrap();
    let (code, stderr) = refused(&state);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&journal.display().to_string()), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("Refusing to start"), "{stderr}");
}

#[test]
fn each_snapshot_starts_a_short_journal_and_loses_nothing() {
    if !native_only() {
        return;
    }
    let state = state_file("rotate");
    let server = Server::start(&[
        "--state-file",
        state.to_str().unwrap(),
        "--snapshot-interval",
        "1s",
    ]);
    let journal = journal_of(&state);
    let tokens: Vec<String> = (0..100).map(|n| server.login(json!({ "n": n }))).collect();
    // A periodic snapshot seals the journal, starts a new one and, once on disk, deletes the
    // sealed segment; wide bound for a busy box.
    let deadline = Instant::now() + Duration::from_secs(60);
    // (A seal renames the journal before creating the next: it may be missing for an instant.)
    while std::fs::read(&journal).ok().as_deref() != Some(HEADER.as_bytes())
        || !segments(&state).is_empty()
    {
        assert!(Instant::now() < deadline, "the journal was never rotated");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Changes after the snapshot land in the new journal; both together restore all (also
    // when the kill lands mid-snapshot, leaving a sealed segment: it is replayed too).
    let (successor, _) = exchange(&server, &tokens[0], None).unwrap();
    kill_9(server);
    let server = Server::start(&["--state-file", state.to_str().unwrap()]);
    assert_eq!(exchange(&server, &tokens[0], None), None);
    assert!(exchange(&server, &successor, None).is_some());
    for token in &tokens[1..] {
        assert!(exchange(&server, token, None).is_some());
    }
    // A clean stop snapshots too: the journal is its header alone again.
    assert!(server.terminate().success());
    assert_eq!(std::fs::read(&journal).unwrap(), HEADER.as_bytes());
    assert_eq!(segments(&state), Vec::<String>::new());
}

/// The sealed journal segments beside `state`.
fn segments(state: &Path) -> Vec<String> {
    std::fs::read_dir(state.parent().unwrap())
        .unwrap()
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("state.journal."))
        .collect()
}

#[test]
fn journal_fsync_always_is_accepted_and_keeps_changes() {
    if !native_only() {
        return;
    }
    let state = state_file("always");
    let args = [
        "--state-file",
        state.to_str().unwrap(),
        "--journal-fsync",
        "always",
    ];
    let server = Server::start(&args);
    let token = server.login(json!({"n": 1}));
    kill_9(server);
    let server = Server::start(&args);
    assert!(exchange(&server, &token, None).is_some());
    let exited = run_native(&["--journal-fsync", "sometimes"]);
    assert_eq!(exited.code, 2);
    assert!(exited.stderr.contains("everysec or always"));
}

/// `POST /token` on `addr`: the token.
fn login_at(addr: std::net::SocketAddr, meta: Value) -> String {
    let body = json!({ "meta": meta }).to_string();
    let response = token_server_tests::request(
        addr,
        "POST",
        "/token",
        Some("application/json"),
        body.as_bytes(),
    );
    assert_eq!(response.status, 200, "{response:?}");
    response.body
}

#[test]
fn a_failed_append_leaves_no_partial_record_for_the_next_one_to_corrupt() {
    if !native_only() {
        return;
    }
    // A full disk (here: a file size limit of 4 KiB, as `ulimit -f 4`) writes part of a
    // record and fails the rest. Once there is room again the next record must not land
    // after that part: it would make one corrupt line of both, losing the answered record
    // and, with one more after it, refusing the start.
    let state = state_file("full");
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut child = std::process::Command::new("bash")
        .args([
            "-c",
            "trap '' XFSZ; ulimit -S -f 4; exec \"$0\" \"$@\"",
            token_server_tests::native_binary().to_str().unwrap(),
            "--port",
            &port.to_string(),
            "--state-file",
            state.to_str().unwrap(),
            "--snapshot-interval",
            "24h",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while token_server_tests::try_request_with_headers(addr, "GET", "/readyz", &[], b"")
        .map_or(true, |response| response.status != 200)
    {
        assert!(Instant::now() < deadline, "the server never got ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let journal = journal_of(&state);
    let pad = "x".repeat(300);
    // Logins until one's record does not reach the journal: the one crossing the limit
    // writes part of its record (or, once cut off, none), the next none at all.
    let length = || std::fs::metadata(&journal).unwrap().len();
    let mut before = Vec::new();
    loop {
        let was = length();
        before.push(login_at(addr, json!({ "n": before.len(), "pad": pad })));
        if length() == was {
            break;
        }
    }
    assert!(length() <= 4096);
    // Room again.
    let raised = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &child.id().to_string(),
            "--fsize=unlimited:unlimited",
        ])
        .status()
        .unwrap();
    assert!(raised.success());
    let after: Vec<String> = (0..2)
        .map(|n| login_at(addr, json!({ "after": n })))
        .collect();
    let _ = child.kill();
    let _ = child.wait();

    let restarted = start(&state, &[]);
    for token in &after {
        assert!(
            exchange(&restarted, token, None).is_some(),
            "a login answered after the disk had room again"
        );
    }
    // A login whose record failed is in memory only (until a snapshot), as documented;
    // every one before the limit was reached is on disk.
    for token in before.iter().take(before.len() - 2) {
        assert!(exchange(&restarted, token, None).is_some());
    }
}
