//! The Redis commands of concurrent requests, sent in one write as a pipeline.
//!
//! redis-rs multiplexes requests over one connection, but its writer task runs as soon as
//! a request hands it a command (tokio runs a task woken by the running one next), so
//! every command is a write of its own, and every write wakes Redis. Sharing a CPU with
//! Redis, as a small deployment does, each wake-up is a context switch that costs more
//! than the command. Here the first command of a batch waits until the runtime has run
//! every other ready request (a yield, which tokio defers until its queue is empty; again
//! while that brought more), so the commands those requests issued meanwhile go out with
//! it: one write, one wake-up.
//! And one batch is in flight at a time, so the commands issued while Redis answers it
//! go out together next. The added wait is that of the requests already running and of
//! the batch ahead, never a timer.
//!
//! The batch bounds each command's wait, not the caller: a command is answered with an
//! error by its deadline (when it was sent plus the timeout), the batch carrying it
//! giving up at its earliest command's. A timer per request cost more than its command:
//! tokio wakes its I/O driver (an `eventfd` write, then one more `epoll_wait`) whenever a
//! timer is set while no other is pending, which between batches was most requests.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Cmd, RedisError, RedisResult, Value};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Most commands in one pipeline: a bound on what one write holds, far above the number
/// of requests one instance runs at once on a small machine.
const MAX_BATCH: usize = 256;

/// Most yields to the runtime a batch waits for commands: each costs a poll of the
/// sockets, and a batch keeps waiting only while the last one brought commands.
const MAX_YIELDS: usize = 4;

/// Most commands waiting for a batch. While Redis hangs (each batch then waits until its
/// earliest command's deadline), requests wait for room here until their own deadline,
/// rather than queue without bound: at most a few hundred KiB of commands.
const MAX_WAITING: usize = 4096;

/// A command waiting for its batch, and where its answer goes.
struct Queued {
    cmd: Cmd,
    answer: oneshot::Sender<RedisResult<Value>>,
    /// When the command's answer is due: an error then, if Redis has not answered.
    deadline: Instant,
}

/// Sends commands over a connection in batches (see the module's documentation).
pub struct CommandBatch {
    queue: mpsc::Sender<Queued>,
    timeout: Duration,
}

impl CommandBatch {
    /// Starts the batching task over `connection` (on the current tokio runtime); it ends
    /// when this is dropped. Each command is answered within `timeout` of its sending.
    pub fn start<C: ConnectionLike + Clone + Send + 'static>(
        connection: C,
        timeout: Duration,
    ) -> CommandBatch {
        let (queue, waiting) = mpsc::channel(MAX_WAITING);
        tokio::spawn(batch_commands(connection, waiting));
        CommandBatch { queue, timeout }
    }

    /// Sends `cmd` with whatever other commands are issued meanwhile; its answer (an error
    /// reply as an error), or a timeout error once the timeout has passed. A caller that
    /// stops waiting before its batch goes out withdraws the command; after, leaves it to
    /// run unanswered.
    pub async fn send(&self, cmd: Cmd) -> RedisResult<Value> {
        let deadline = Instant::now() + self.timeout;
        let (answer, answered) = oneshot::channel();
        let queued = Queued {
            cmd,
            answer,
            deadline,
        };
        match self.queue.try_send(queued) {
            Ok(()) => {}
            Err(TrySendError::Closed(_)) => return Err(stopped()),
            // Only while Redis hangs or lags far behind: wait for room, within the timeout.
            Err(TrySendError::Full(queued)) => {
                tokio::time::timeout_at(deadline, self.queue.send(queued))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|_| stopped())?;
            }
        }
        answered.await.map_err(|_| stopped())?
    }
}

fn stopped() -> RedisError {
    RedisError::from((redis::ErrorKind::Io, "the Redis command batch stopped"))
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "Redis did not answer in time",
    ))
}

async fn batch_commands<C: ConnectionLike + Clone + Send + 'static>(
    connection: C,
    mut waiting: mpsc::Receiver<Queued>,
) {
    while let Some(first) = waiting.recv().await {
        // Deferred by tokio until every other ready task has run: the requests running now
        // add their commands to this batch. Again while that added some (the runtime
        // polled the sockets in between, and more requests came in), a few times at most.
        let mut batch = vec![first];
        for _ in 0..MAX_YIELDS {
            tokio::task::yield_now().await;
            let before = batch.len();
            while batch.len() < MAX_BATCH {
                match waiting.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            if batch.len() == before || batch.len() == MAX_BATCH {
                break;
            }
        }
        // Whoever gave up waiting gets nothing sent for them; whoever waited past the
        // deadline (behind a batch Redis was slow to answer) gets the timeout.
        let now = Instant::now();
        let mut live = Vec::with_capacity(batch.len());
        for queued in batch {
            if queued.answer.is_closed() {
                continue;
            }
            if queued.deadline <= now {
                let _ = queued.answer.send(Err(timed_out()));
                continue;
            }
            live.push(queued);
        }
        let batch = live;
        let Some(deadline) = batch.iter().map(|queued| queued.deadline).min() else {
            continue;
        };
        // One batch in flight: the commands issued while it is answered make the next,
        // larger batch (Redis answers in order anyway, so none waits longer for it than
        // for the commands ahead of it). Its earliest command's deadline bounds the wait:
        // one timer per batch.
        send_batch(connection.clone(), batch, deadline).await;
    }
}

async fn send_batch<C: ConnectionLike>(mut connection: C, batch: Vec<Queued>, deadline: Instant) {
    if batch.len() == 1 {
        for Queued { cmd, answer, .. } in batch {
            let sent = tokio::time::timeout_at(deadline, connection.req_packed_command(&cmd));
            let answer_now = sent.await.unwrap_or_else(|_| Err(timed_out()));
            let _ = answer.send(own_answer(answer_now));
        }
        return;
    }
    let mut pipeline = redis::Pipeline::with_capacity(batch.len());
    let mut answers = Vec::with_capacity(batch.len());
    for Queued { cmd, answer, .. } in batch {
        pipeline.add_command(cmd);
        answers.push(answer);
    }
    let sent = tokio::time::timeout_at(
        deadline,
        connection.req_packed_commands(&pipeline, 0, answers.len()),
    );
    match sent.await.unwrap_or_else(|_| Err(timed_out())) {
        Ok(values) if values.len() == answers.len() => {
            for (value, answer) in values.into_iter().zip(answers) {
                let _ = answer.send(own_answer(Ok(value)));
            }
        }
        Ok(values) => {
            let err = RedisError::from((
                redis::ErrorKind::Parse,
                "a pipeline answered another number of values",
                format!("{} for {} commands", values.len(), answers.len()),
            ));
            for answer in answers {
                let _ = answer.send(Err(err.clone()));
            }
        }
        Err(err) => {
            for answer in answers {
                let _ = answer.send(Err(err.clone()));
            }
        }
    }
}

/// A command's answer with an error reply as an error, as alone or in a pipeline.
fn own_answer(answer: RedisResult<Value>) -> RedisResult<Value> {
    match answer {
        Ok(Value::ServerError(err)) => Err(err.into()),
        answer => answer,
    }
}
