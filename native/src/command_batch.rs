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

use redis::aio::ConnectionLike;
use redis::{Cmd, RedisError, RedisResult, Value};
use tokio::sync::{mpsc, oneshot};

/// Most commands in one pipeline: a bound on what one write holds, far above the number
/// of requests one instance runs at once on a small machine.
const MAX_BATCH: usize = 256;

/// Most yields to the runtime a batch waits for commands: each costs a poll of the
/// sockets, and a batch keeps waiting only while the last one brought commands.
const MAX_YIELDS: usize = 4;

/// Most commands waiting for a batch. While Redis hangs (each batch then waits for the
/// response timeout), requests wait for room here within their own timeout, rather than
/// queue without bound: at most a few hundred KiB of commands.
const MAX_WAITING: usize = 4096;

/// A command waiting for its batch, and where its answer goes.
struct Queued {
    cmd: Cmd,
    answer: oneshot::Sender<RedisResult<Value>>,
}

/// Sends commands over a connection in batches (see the module's documentation).
pub struct CommandBatch {
    queue: mpsc::Sender<Queued>,
}

impl CommandBatch {
    /// Starts the batching task over `connection` (on the current tokio runtime); it ends
    /// when this is dropped.
    pub fn start<C: ConnectionLike + Clone + Send + 'static>(connection: C) -> CommandBatch {
        let (queue, waiting) = mpsc::channel(MAX_WAITING);
        tokio::spawn(batch_commands(connection, waiting));
        CommandBatch { queue }
    }

    /// Sends `cmd` with whatever other commands are issued meanwhile; its answer (an error
    /// reply as an error). A caller that stops waiting (a timeout) before its batch goes
    /// out withdraws the command; after, leaves it to run unanswered.
    pub async fn send(&self, cmd: Cmd) -> RedisResult<Value> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Queued { cmd, answer })
            .await
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

fn stopped() -> RedisError {
    RedisError::from((redis::ErrorKind::Io, "the Redis command batch stopped"))
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
        // Whoever gave up waiting (Redis slow or down) gets nothing sent for them.
        batch.retain(|queued| !queued.answer.is_closed());
        if batch.is_empty() {
            continue;
        }
        // One batch in flight: the commands issued while it is answered make the next,
        // larger batch (Redis answers in order anyway, so none waits longer for it than
        // for the commands ahead of it). redis-rs's response timeout bounds the wait.
        send_batch(connection.clone(), batch).await;
    }
}

async fn send_batch<C: ConnectionLike>(mut connection: C, batch: Vec<Queued>) {
    if batch.len() == 1 {
        for Queued { cmd, answer } in batch {
            let _ = answer.send(own_answer(connection.req_packed_command(&cmd).await));
        }
        return;
    }
    let mut pipeline = redis::Pipeline::with_capacity(batch.len());
    let mut answers = Vec::with_capacity(batch.len());
    for Queued { cmd, answer } in batch {
        pipeline.add_command(cmd);
        answers.push(answer);
    }
    match connection
        .req_packed_commands(&pipeline, 0, answers.len())
        .await
    {
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
