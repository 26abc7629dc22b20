//! Deadlines on a client connection, so a client that stalls (half a request head, nothing
//! at all, a body that never ends, a kept-alive connection never reused) cannot hold a
//! connection and its file descriptor forever.
//!
//! hyper 1 has a header-read timeout only, and it starts as soon as the previous answer is
//! written, so it cannot tell a slow request head from a kept-alive connection waiting for
//! its next request. These deadlines follow nginx instead: a request head gets
//! `header` from its first byte (from the accept on a new connection), a kept-alive
//! connection gets `idle` between requests, and a request body gets `body`.
//!
//! A deadline is fixed when the connection first waits in its phase, not when the phase
//! begins: most request heads and bodies arrive whole and never wait, and a kept-alive
//! connection starts waiting as soon as its answer is written, so the clock is read once
//! a request instead of three times (each read costs a little on every request). The
//! difference is the microseconds between a phase's start and its first wait.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long each stage of a request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From a new connection, or the first byte of a later request, to a complete head.
    pub header: Duration,
    /// From an answer on a kept-alive connection to the first byte of the next request.
    pub idle: Duration,
    /// From a complete head to the end of the body.
    pub body: Duration,
}

/// Where one connection is in its request cycle: shared by the stream, which sees bytes
/// arrive, and the service, which sees requests start and end.
#[derive(Debug, Clone)]
pub struct ConnectionState {
    timeouts: Timeouts,
    /// One allocation per connection, cloned into each request's guard.
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// A std mutex: held for a comparison and an assignment, never across an await.
    cycle: Mutex<Cycle>,
}

#[derive(Debug)]
struct Cycle {
    phase: Phase,
    /// The stream's task, when it waited while requests were being answered (no deadline
    /// then, so no timer armed): woken when the last one ends, to arm the idle timer.
    /// Without it, an answer that completes after hyper's read has gone pending (an
    /// async store such as Redis) leaves the connection open until the client speaks.
    waiting: Option<Waker>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request head to be complete; `None` until the stream first waits.
    Head { deadline: Option<Instant> },
    /// Between requests on a kept-alive connection; `None` until the stream first waits.
    Idle { deadline: Option<Instant> },
    /// Requests being answered; their bodies carry their own deadline. Counts the
    /// [`RequestGuard`]s alive.
    Busy { requests: usize },
}

impl ConnectionState {
    /// The state of a connection just accepted: the header timeout runs from now.
    pub fn new(timeouts: Timeouts) -> ConnectionState {
        ConnectionState {
            timeouts,
            shared: Arc::new(Shared {
                cycle: Mutex::new(Cycle {
                    phase: Phase::Head {
                        deadline: Some(Instant::now() + timeouts.header),
                    },
                    waiting: None,
                }),
            }),
        }
    }

    /// The limits this connection runs with.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    fn with_cycle<T>(&self, change: impl FnOnce(&mut Cycle) -> T) -> T {
        let mut cycle = self
            .shared
            .cycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        change(&mut cycle)
    }

    /// Bytes arrived: on an idle connection a new request has begun.
    fn bytes_arrived(&self) {
        self.with_cycle(|cycle| {
            if let Phase::Idle { .. } = cycle.phase {
                cycle.phase = Phase::Head { deadline: None };
            }
        });
    }

    /// A request head is complete; the connection is busy until the returned guard is
    /// dropped (its answer is ready). The body needs no guard of its own: the answer reads
    /// it, and a refused body read on after the answer (the lingering close) is bounded
    /// by its own deadlines.
    pub fn request_started(&self) -> RequestGuard {
        self.with_cycle(|cycle| {
            cycle.phase = match cycle.phase {
                Phase::Busy { requests } => Phase::Busy {
                    requests: requests + 1,
                },
                Phase::Head { .. } | Phase::Idle { .. } => Phase::Busy { requests: 1 },
            }
        });
        RequestGuard {
            state: self.clone(),
        }
    }

    fn request_finished(&self) {
        let waiting = self.with_cycle(|cycle| {
            if let Phase::Busy { requests } = cycle.phase {
                if requests > 1 {
                    cycle.phase = Phase::Busy {
                        requests: requests - 1,
                    };
                    return None;
                }
                cycle.phase = Phase::Idle { deadline: None };
            }
            cycle.waiting.take()
        });
        if let Some(waker) = waiting {
            waker.wake();
        }
    }

    /// The deadline the stream waits under (see [`ConnectionState::deadline`]); while
    /// busy, `cx`'s task is remembered and woken when the connection is no longer busy.
    fn deadline_or_wake_when_idle(&self, cx: &Context<'_>) -> Option<(Instant, &'static str)> {
        let timeouts = self.timeouts;
        self.with_cycle(|cycle| {
            let deadline = fix_deadline(&mut cycle.phase, timeouts);
            if deadline.is_none() {
                cycle.waiting = Some(cx.waker().clone());
            }
            deadline
        })
    }

    /// When the connection is to be closed if it is still waiting for the client (fixed
    /// now if it was not yet, as a wait would fix it); `None` while requests are being
    /// answered. The reason names the flag for the log.
    #[cfg(test)]
    fn deadline(&self) -> Option<(Instant, &'static str)> {
        let timeouts = self.timeouts;
        self.with_cycle(|cycle| fix_deadline(&mut cycle.phase, timeouts))
    }
}

/// The deadline of `phase`, fixed from now if the phase has not waited before.
fn fix_deadline(phase: &mut Phase, timeouts: Timeouts) -> Option<(Instant, &'static str)> {
    match phase {
        Phase::Head { deadline } => Some((
            *deadline.get_or_insert_with(|| Instant::now() + timeouts.header),
            "--header-timeout",
        )),
        Phase::Idle { deadline } => Some((
            *deadline.get_or_insert_with(|| Instant::now() + timeouts.idle),
            "--idle-timeout",
        )),
        Phase::Busy { .. } => None,
    }
}

/// Keeps its connection busy while its answer is being made. Each guard counts in the
/// connection's phase (HTTP/2 answers several at once), so none needs an allocation.
#[derive(Debug)]
pub struct RequestGuard {
    state: ConnectionState,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.state.request_finished();
    }
}

/// A byte stream that fails with [`io::ErrorKind::TimedOut`] when it has waited for the
/// client past the connection's deadline; hyper then closes the connection.
#[derive(Debug)]
pub struct DeadlineStream<T> {
    inner: T,
    state: ConnectionState,
    /// Created on the first wait, then reset: one timer per connection.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> DeadlineStream<T> {
    /// Wraps `inner`, whose deadlines `state` keeps.
    pub fn new(inner: T, state: ConnectionState) -> DeadlineStream<T> {
        DeadlineStream {
            inner,
            state,
            timer: None,
        }
    }

    /// Called when the stream would wait: `Pending` with the timer armed, or the error
    /// that closes the connection once the deadline has passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        // One lock: the deadline, or (while busy) the waker that the end of the last
        // request wakes, so an end in between cannot be missed.
        let Some((deadline, flag)) = self.state.deadline_or_wake_when_idle(cx) else {
            return Poll::Pending;
        };
        let timer = match &mut self.timer {
            // Each request moves the idle deadline later. A later deadline leaves the
            // timer where it is: it fires early, once, and is moved then, instead of
            // being moved on every request.
            Some(timer) => {
                if deadline < timer.deadline() {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        let mut fired = timer.as_mut().poll(cx).is_ready();
        if fired && timer.deadline() < deadline {
            // Fired early, at a deadline since moved later: wait for the one in force.
            timer.as_mut().reset(deadline);
            fired = timer.as_mut().poll(cx).is_ready();
        }
        if !fired {
            return Poll::Pending;
        }
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client waited longer than {flag}"),
        ))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeadlineStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.state.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => this.poll_deadline(cx).map(Err),
        }
    }
}

/// Writes wait under the same deadline: an answer the client does not read for
/// `--idle-timeout` ends the connection too.
impl<T: AsyncWrite + Unpin> AsyncWrite for DeadlineStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.poll_deadline(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.poll_deadline(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.poll_deadline(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.poll_deadline(cx).map(Err),
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Why a request body ended early.
#[derive(Debug)]
pub enum BodyError {
    /// The connection failed or the client broke the framing.
    Transport(hyper::Error),
    /// The whole body did not arrive within `--body-timeout`.
    TimedOut,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Transport(err) => err.fmt(f),
            BodyError::TimedOut => f.write_str("the request body took longer than --body-timeout"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Transport(err) => Some(err),
            BodyError::TimedOut => None,
        }
    }
}

/// A request body that ends with [`BodyError::TimedOut`] at its deadline: `timeout` from
/// the first time it is waited for (most bodies arrive with the head and never are).
#[derive(Debug)]
pub struct TimedBody<B> {
    inner: B,
    timeout: Duration,
    /// Created only when the body is not all there yet, at `timeout` from then.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the deadline passed; the body then ends.
    expired: bool,
}

impl<B> TimedBody<B> {
    /// `inner`, which must be read whole within `timeout` of its first wait.
    pub fn new(inner: B, timeout: Duration) -> TimedBody<B> {
        TimedBody {
            inner,
            timeout,
            timer: None,
            expired: false,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Error = hyper::Error> + Unpin,
{
    type Data = B::Data;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                Poll::Ready(frame.map(|frame| frame.map_err(BodyError::Transport)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.expired = true;
                        log::debug!("{}; closing the connection", BodyError::TimedOut);
                        Poll::Ready(Some(Err(BodyError::TimedOut)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        body: Duration::from_secs(30),
    };

    #[tokio::test(start_paused = true)]
    async fn a_read_that_waited_while_busy_times_out_once_idle() {
        use tokio::io::AsyncReadExt;
        let (client, server) = tokio::io::duplex(64);
        let state = ConnectionState::new(TIMEOUTS);
        let answering = state.request_started();
        let mut stream = DeadlineStream::new(server, state.clone());
        let read = tokio::spawn(async move {
            let mut buffer = [0u8; 8];
            stream.read(&mut buffer).await
        });
        // The read goes pending while the answer is still being made (an async store).
        tokio::time::advance(TIMEOUTS.idle * 3).await;
        assert!(!read.is_finished(), "no deadline while busy");
        drop(answering);
        let closed = tokio::time::timeout(TIMEOUTS.idle * 2, read)
            .await
            .expect("the idle timeout closes the connection")
            .unwrap();
        assert_eq!(closed.unwrap_err().kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    /// The timer is left where it was when the deadline moves later (once a request):
    /// its early firing must not close the connection before the deadline in force.
    #[tokio::test(start_paused = true)]
    async fn a_deadline_moved_later_is_waited_for_in_full() {
        use tokio::io::AsyncReadExt;
        let (client, server) = tokio::io::duplex(64);
        let state = ConnectionState::new(TIMEOUTS);
        drop(state.request_started());
        let mut stream = DeadlineStream::new(server, state.clone());
        let mut buffer = [0u8; 8];
        // Idle from now: the timer is armed at now + idle.
        let first_wait = tokio::time::timeout(TIMEOUTS.idle / 2, stream.read(&mut buffer)).await;
        assert!(first_wait.is_err(), "still within the idle timeout");
        // A request comes and goes: the idle deadline is now half an idle timeout later.
        drop(state.request_started());
        let moved_from = Instant::now();
        let read = tokio::spawn(async move {
            let mut buffer = [0u8; 8];
            stream.read(&mut buffer).await
        });
        tokio::time::sleep(TIMEOUTS.idle * 3 / 4).await;
        assert!(
            !read.is_finished(),
            "closed at the old deadline, not the one in force"
        );
        let closed = read.await.unwrap();
        assert_eq!(closed.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(Instant::now() >= moved_from + TIMEOUTS.idle);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_cycles_through_head_busy_and_idle() {
        let start = Instant::now();
        let state = ConnectionState::new(TIMEOUTS);
        assert_eq!(
            state.deadline(),
            Some((start + TIMEOUTS.header, "--header-timeout"))
        );
        // Two answers at once, as over HTTP/2.
        let first = state.request_started();
        let second = state.request_started();
        drop(first);
        assert_eq!(state.deadline(), None, "a request is still being answered");
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(second);
        let idle_from = Instant::now();
        assert_eq!(
            state.deadline(),
            Some((idle_from + TIMEOUTS.idle, "--idle-timeout"))
        );
        tokio::time::advance(Duration::from_secs(20)).await;
        state.bytes_arrived();
        assert_eq!(
            state.deadline(),
            Some((
                idle_from + Duration::from_secs(20) + TIMEOUTS.header,
                "--header-timeout"
            )),
            "the next request's head gets the header timeout from its first byte"
        );
        state.bytes_arrived();
        assert_eq!(
            state.deadline(),
            Some((
                idle_from + Duration::from_secs(20) + TIMEOUTS.header,
                "--header-timeout"
            )),
            "more bytes of the same head do not extend it"
        );
    }
}
