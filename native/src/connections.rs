//! Accepting and running client connections: at most `max_connections` open at once, each
//! under the deadlines of [`crate::deadline`] (over TLS too, handshake included), accept
//! errors survived without spinning, and a shutdown that gives in-flight requests a
//! bounded time before dropping them.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use token_server_core::throttle::Throttle;
use token_server_core::{Clock, SystemClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::deadline::{ConnectionState, DeadlineStream, RequestGuard, TimedBody, Timeouts};
use crate::tls::{self, Tls};

/// Where connections come from: a TCP listener, speaking TLS when given the settings.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<Arc<Tls>>,
}

impl Listener {
    /// Connections on `tcp` speak TLS with the settings in force when each is accepted
    /// (a SIGHUP reload of `tls` reaches new connections only).
    pub fn tls(tcp: TcpListener, tls: Arc<Tls>) -> Listener {
        Listener {
            tcp,
            tls: Some(tls),
        }
    }

    /// Plain HTTP, or TLS with `tls` when given (`--tls-cert` set).
    pub fn maybe_tls(tcp: TcpListener, tls: Option<Arc<Tls>>) -> Listener {
        Listener { tcp, tls }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp.local_addr()
    }
}

impl From<TcpListener> for Listener {
    /// Plain HTTP.
    fn from(tcp: TcpListener) -> Listener {
        Listener { tcp, tls: None }
    }
}

/// What bounds the connections of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Deadlines for request heads, idle connections and bodies.
    pub timeouts: Timeouts,
    /// Most connections open at once. Past it the server stops accepting, so further
    /// clients wait in the kernel's listen backlog rather than failing outright.
    pub max_connections: usize,
    /// How long in-flight requests may run after the shutdown signal.
    pub shutdown_timeout: Duration,
    /// When set (by [`lifecycle::drain_after`](crate::lifecycle::drain_after) at the stop
    /// signal), the end of the whole stop: the drain that ran before the listener closed
    /// used part of `shutdown_timeout`, and only the rest is left here.
    pub stop_deadline: Option<StopDeadline>,
}

/// The instant a stop must be done by, set once when the stop signal arrives.
pub type StopDeadline = Arc<std::sync::OnceLock<tokio::time::Instant>>;

impl Default for ConnectionLimits {
    /// The command line's defaults.
    fn default() -> Self {
        ConnectionLimits::from(&crate::cli::Config::default())
    }
}

impl From<&crate::cli::Config> for ConnectionLimits {
    /// The limits the command line set, with no stop deadline yet.
    fn from(config: &crate::cli::Config) -> Self {
        ConnectionLimits {
            timeouts: Timeouts {
                header: config.header_timeout,
                idle: config.idle_timeout,
                body: config.body_timeout,
            },
            max_connections: config.max_connections,
            shutdown_timeout: config.shutdown_timeout,
            stop_deadline: None,
        }
    }
}

/// An error hyper can report on a connection.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What [`serve`] asks of the service it runs on every connection (warp's filter as a
/// tower service): cloned per connection, its answers sent from hyper's tasks. Named once
/// so the accept loop and each connection state the same bounds.
pub trait ConnectionService<B>:
    tower_service::Service<
        Request<TimedBody<Incoming>>,
        Response = Response<B>,
        Error: Into<BoxError>,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> ConnectionService<B> for S where
    S: tower_service::Service<
            Request<TimedBody<Incoming>>,
            Response = Response<B>,
            Error: Into<BoxError>,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// What [`serve`] asks of an answer's body: hyper sends it from its own tasks.
pub trait ResponseBody: Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}

impl<B> ResponseBody for B where B: Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}

/// How long the accept loop pauses after an error such as EMFILE: long enough not to
/// spin on a condition that persists, short enough to resume soon after a close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `service` on each connection accepted from `listener` until `shutdown`
/// resolves; then stops accepting, lets in-flight requests finish within
/// `limits.shutdown_timeout`, and drops the connections still open.
pub async fn serve<S, B>(
    listener: impl Into<Listener>,
    service: S,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) where
    S: ConnectionService<B>,
    B: ResponseBody,
{
    let Listener { tcp: listener, tls } = listener.into();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    // Dropped when accepting stops: a connection still in its TLS handshake has sent no
    // request, so it is closed then, as hyper closes an idle one.
    let (stopping, stopped) = watch::channel(());
    let mut connections = JoinSet::new();
    let accept_errors = Throttle::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => permit,
        };
        // The semaphore is never closed; a closed one would mean no more connections.
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                drop(permit);
                if !is_the_clients_fault(&err) {
                    if let Some(held) = accept_errors.check(SystemClock.now()) {
                        log::error!("cannot accept a connection: {err}{}", repeated_since(held));
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                continue;
            }
        };
        let watcher = graceful.watcher();
        let service = service.clone();
        let tls = tls.clone();
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            // Held for the connection's life: its slot under --max-connections.
            let _permit = permit;
            let state = ConnectionState::new(limits.timeouts);
            let service = TrackedService {
                inner: service,
                state: state.clone(),
            };
            let Some(tls) = tls else {
                let io = TokioIo::new(DeadlineStream::new(stream, state));
                return serve_http(io, service, watcher, peer).await;
            };
            let handshake = accept_tls(&tls, stream, state, limits.timeouts.header, peer);
            let stream = tokio::select! {
                stream = handshake => stream,
                // Err: the sender is dropped, accepting has stopped.
                _ = stopped.changed() => None,
            };
            if let Some(stream) = stream {
                serve_http(TokioIo::new(stream), service, watcher, peer).await;
            }
        });
    }
    drop(stopping);
    // Closing the listener makes new clients fail fast instead of waiting in a backlog
    // nobody will accept from.
    drop(listener);
    while connections.try_join_next().is_some() {}
    let open = connections.len();
    let left = match limits
        .stop_deadline
        .as_ref()
        .and_then(|deadline| deadline.get())
    {
        Some(deadline) => deadline.saturating_duration_since(tokio::time::Instant::now()),
        None => limits.shutdown_timeout,
    };
    if open > 0 {
        log::info!(
            "waiting up to {} for {open} open connection(s)",
            token_server_core::duration::format_duration(left)
        );
    }
    if tokio::time::timeout(left, graceful.shutdown())
        .await
        .is_err()
    {
        while connections.try_join_next().is_some() {}
        log::warn!(
            "dropping {} connection(s) still open after --shutdown-timeout",
            connections.len()
        );
    }
    connections.shutdown().await;
}

/// Serves HTTP/1.1 or HTTP/2 (whichever the client speaks) on one connection until it
/// closes, or until the graceful shutdown `watcher` watches for closes it.
async fn serve_http<I, S, B>(io: I, service: TrackedService<S>, watcher: Watcher, peer: SocketAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: ConnectionService<B>,
    B: ResponseBody,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(io, service);
    if let Err(err) = watcher.watch(connection).await {
        log::debug!("connection from {peer} closed: {}", with_causes(&*err));
    }
}

/// The TLS stream of a new connection once its handshake is done; `None` if the client
/// went away, stalled past `header_timeout` (from the accept), failed the handshake, or
/// spoke plain HTTP (answered with a 400 first).
async fn accept_tls(
    tls: &Tls,
    stream: TcpStream,
    state: ConnectionState,
    header_timeout: Duration,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<DeadlineStream<TcpStream>>> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(header_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) if tls::is_handshake(first[0]) => {}
        Ok(Ok(1)) => {
            refuse_plain_http(stream).await;
            return None;
        }
        _ => return None,
    }
    // The deadline stream below TLS bounds the handshake by the header timeout too, and
    // sees every byte as it arrives.
    match tls
        .acceptor()
        .accept(DeadlineStream::new(stream, state))
        .await
    {
        Ok(stream) => Some(stream),
        Err(err) => {
            tls.handshake_failed(peer, &err);
            None
        }
    }
}

/// How long a refused plain-HTTP client may go on sending before the connection closes.
const PLAIN_HTTP_LINGER: Duration = Duration::from_secs(1);

/// Answers a plain-HTTP request on the TLS port with a 400 saying so, then closes. What
/// the client sent is read and discarded for a moment first, as closing a socket with
/// unread data would reset it and destroy the answer.
async fn refuse_plain_http(mut stream: TcpStream) {
    let answered = async {
        stream
            .write_all(tls::plain_http_refusal().as_bytes())
            .await?;
        stream.shutdown().await?;
        let mut discard = [0u8; 4096];
        while stream.read(&mut discard).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(PLAIN_HTTP_LINGER, answered).await;
}

/// Errors that concern one connection the client already gave up on, not the listener.
fn is_the_clients_fault(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// An error with its chain of causes, as hyper's own messages are terse ("connection
/// error") and the reason (a timeout, a reset) is in the source.
fn with_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The tail of a throttled log line: how many like it were held back.
fn repeated_since(held: u64) -> String {
    if held == 0 {
        String::new()
    } else {
        format!(" ({held} more since the last report)")
    }
}

/// The per-connection service: marks the connection busy from each request head until
/// its answer is ready, and puts the body under `--body-timeout`.
#[derive(Clone)]
struct TrackedService<S> {
    inner: S,
    state: ConnectionState,
}

impl<S> hyper::service::Service<Request<Incoming>> for TrackedService<S>
where
    S: tower_service::Service<Request<TimedBody<Incoming>>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TrackedAnswer<S::Future>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let guard = self.state.request_started();
        let body_timeout = self.state.timeouts().body;
        let request = request.map(|body| TimedBody::new(body, body_timeout));
        // warp's service is always ready, as `TowerToHyperService` assumes too.
        TrackedAnswer {
            answer: self.inner.clone().call(request),
            guard: Some(guard),
        }
    }
}

pin_project_lite::pin_project! {
    /// An answer being made, holding its connection busy until it is ready. A named
    /// future rather than a boxed one: hyper keeps it in the connection's own slot, so
    /// a request costs no allocation of the size of the whole answer's state.
    pub struct TrackedAnswer<F> {
        #[pin]
        answer: F,
        // Released as soon as the answer is ready, as hyper may keep the finished
        // future a while.
        guard: Option<RequestGuard>,
    }
}

impl<F: Future> Future for TrackedAnswer<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let this = self.project();
        let ready = std::task::ready!(this.answer.poll(cx));
        this.guard.take();
        std::task::Poll::Ready(ready)
    }
}
