//! The native host's Redis command batching (`token_server::command_batch`) against a real
//! `redis-server`: many concurrent commands, each answered with its own reply, and an
//! error failing only its own command; a command whose caller gave up before its batch
//! went out is never sent; a batch Redis does not answer fails its commands, and those
//! waiting behind it, within the timeout.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use token_server::command_batch::CommandBatch;
use token_server::redis_store::{single_connection, DEFAULT_TIMEOUT};
use token_server_tests::{redis_available, RedisServer};

/// A fresh redis-server and a runtime with one worker, as a server pinned to one CPU runs
/// (batches form only there); `None`, said on stderr, without redis-server.
fn redis_and_one_worker() -> Option<(RedisServer, tokio::runtime::Runtime)> {
    if !redis_available() {
        eprintln!("skipped: redis-server is not installed (tests/run-all.sh installs it)");
        return None;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    Some((RedisServer::start(), runtime))
}

#[test]
fn every_command_of_a_batch_gets_its_own_answer() {
    let Some((redis, runtime)) = redis_and_one_worker() else {
        return;
    };
    let writes = Arc::new(AtomicUsize::new(0));
    runtime.block_on(async {
        let batch = Arc::new(CommandBatch::start(
            Counted {
                inner: connection(&redis),
                writes: writes.clone(),
            },
            Duration::from_secs(30),
        ));
        let send = |cmd: redis::Cmd| {
            let batch = batch.clone();
            tokio::spawn(async move { batch.send(cmd).await })
        };
        let sets: Vec<_> = (0..200)
            .map(|i| {
                send(
                    redis::cmd("SET")
                        .arg(format!("k{i}"))
                        .arg(format!("v{i}"))
                        .clone(),
                )
            })
            .collect();
        for set in sets {
            assert_eq!(set.await.unwrap().unwrap(), redis::Value::Okay);
        }
        // Reads racing one command that fails: INCR of a value that is not a number.
        let mut gets: Vec<_> = (0..200)
            .map(|i| send(redis::cmd("GET").arg(format!("k{i}")).clone()))
            .collect();
        gets.insert(100, send(redis::cmd("INCR").arg("k0").clone()));
        let answers: Vec<_> = futures_join(gets).await;
        assert!(answers[100].is_err(), "{:?}", answers[100]);
        for (i, answer) in answers.iter().enumerate().filter(|(i, _)| *i != 100) {
            let key = if i < 100 { i } else { i - 1 };
            assert_eq!(
                answer.as_ref().unwrap(),
                &redis::Value::BulkString(format!("v{key}").into_bytes())
            );
        }
    });
    // The batches really held several commands: far fewer writes than commands.
    let writes = writes.load(Ordering::Relaxed);
    assert!(writes <= 401 / 4, "{writes} writes for 401 commands");
}

/// The connection the Redis store makes for `--redis`, to `redis`.
fn connection(redis: &RedisServer) -> ConnectionManager {
    single_connection(&redis.url(), DEFAULT_TIMEOUT).expect("a connection to redis-server")
}

/// A connection that counts what is sent over it: one call, one write.
#[derive(Clone)]
struct Counted {
    inner: ConnectionManager,
    writes: Arc<AtomicUsize>,
}

impl ConnectionLike for Counted {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

async fn futures_join(
    handles: Vec<tokio::task::JoinHandle<redis::RedisResult<redis::Value>>>,
) -> Vec<redis::RedisResult<redis::Value>> {
    let mut answers = Vec::new();
    for handle in handles {
        answers.push(handle.await.unwrap());
    }
    answers
}

#[test]
fn a_command_given_up_before_its_batch_goes_out_is_never_sent() {
    let Some((redis, runtime)) = redis_and_one_worker() else {
        return;
    };
    runtime.block_on(async {
        let gate = Gated::closed(connection(&redis));
        let batch = Arc::new(CommandBatch::start(gate.clone(), Duration::from_secs(60)));
        // A batch in flight, held at the gate (as a hanging Redis would hold it).
        let first = {
            let batch = batch.clone();
            tokio::spawn(async move {
                batch
                    .send(redis::cmd("SET").arg("sent").arg(1).clone())
                    .await
            })
        };
        gate.first_call().await;
        // A caller that gives up while its command waits behind it.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(100),
            batch.send(redis::cmd("SET").arg("withdrawn").arg(1).clone()),
        )
        .await;
        assert!(gave_up.is_err(), "{gave_up:?}");
        gate.closed.store(false, Ordering::Relaxed);
        gate.open.notify_waiters();
        assert_eq!(first.await.unwrap().unwrap(), Value::Okay);
        let after = batch
            .send(redis::cmd("SET").arg("after").arg(1).clone())
            .await;
        assert_eq!(after.unwrap(), Value::Okay);
    });
    assert_eq!(redis.cli(&["EXISTS", "sent", "after"]).trim(), "2");
    assert_eq!(redis.cli(&["EXISTS", "withdrawn"]).trim(), "0");
}

#[test]
fn a_batch_redis_does_not_answer_fails_within_the_timeout() {
    let Some((redis, runtime)) = redis_and_one_worker() else {
        return;
    };
    runtime.block_on(async {
        let gate = Gated::closed(connection(&redis));
        let timeout = Duration::from_millis(300);
        let batch = Arc::new(CommandBatch::start(gate.clone(), timeout));
        let send = |key: &'static str| {
            let batch = batch.clone();
            tokio::spawn(async move {
                let sent = std::time::Instant::now();
                let answer = batch.send(redis::cmd("SET").arg(key).arg(1).clone()).await;
                (answer, sent.elapsed())
            })
        };
        // A batch held at the gate (a hanging Redis), and a command queued behind it.
        let first = send("held");
        gate.first_call().await;
        let behind = send("behind");
        // Generous: the point is that they end at all, and not long after the timeout.
        let bound = Duration::from_secs(20);
        for waiting in [first, behind] {
            let (answer, took) = tokio::time::timeout(bound, waiting)
                .await
                .expect("a command waited past any timeout")
                .unwrap();
            assert!(answer.is_err(), "{answer:?}");
            assert!(took >= timeout, "failed before its timeout: {took:?}");
        }
        // Redis answering again: the next command goes through.
        gate.closed.store(false, Ordering::Relaxed);
        gate.open.notify_waiters();
        let after = batch
            .send(redis::cmd("SET").arg("after").arg(1).clone())
            .await;
        assert_eq!(after.unwrap(), Value::Okay);
    });
}

/// A connection that holds every command at a gate while `closed`.
#[derive(Clone)]
struct Gated {
    inner: ConnectionManager,
    closed: Arc<AtomicBool>,
    open: Arc<tokio::sync::Notify>,
    calls: Arc<AtomicUsize>,
}

impl Gated {
    /// A gate over `inner`, closed until opened.
    fn closed(inner: ConnectionManager) -> Gated {
        Gated {
            inner,
            closed: Arc::new(AtomicBool::new(true)),
            open: Arc::new(tokio::sync::Notify::new()),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Returns once a command (a batch) has reached the gate.
    async fn first_call(&self) {
        while self.calls.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn pass(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        while self.closed.load(Ordering::Relaxed) {
            let opened = self.open.notified();
            if !self.closed.load(Ordering::Relaxed) {
                break;
            }
            opened.await;
        }
    }
}

impl ConnectionLike for Gated {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            self.pass().await;
            self.inner.req_packed_command(cmd).await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.pass().await;
            self.inner
                .req_packed_commands(pipeline, offset, count)
                .await
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}
