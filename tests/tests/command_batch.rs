//! The native host's Redis command batching (`token_server::command_batch`) against a real
//! `redis-server`: many concurrent commands, each answered with its own reply, and an
//! error failing only its own command.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use token_server::command_batch::CommandBatch;
use token_server_tests::{redis_available, RedisServer};

#[test]
fn every_command_of_a_batch_gets_its_own_answer() {
    if !redis_available() {
        eprintln!("skipped: redis-server is not installed (tests/run-all.sh installs it)");
        return;
    }
    let redis = RedisServer::start();
    // One worker, as a server pinned to one CPU runs: batches form only there.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let writes = Arc::new(AtomicUsize::new(0));
    runtime.block_on(async {
        let client = redis::Client::open(redis.url()).unwrap();
        let manager = ConnectionManager::new(client).await.unwrap();
        let batch = Arc::new(CommandBatch::start(Counted {
            inner: manager,
            writes: writes.clone(),
        }));
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
