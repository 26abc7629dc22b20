//! The HTTP host: warp turns each request into a protocol [`Request`] and the protocol's
//! [`Reply`] back into a response. No endpoint logic lives here; connections are
//! accepted and bounded in [`crate::connections`].

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Buf;
use futures_util::{Stream, StreamExt};
use token_server_core::protocol::{Body, Reply, Request, Service, APPLICATION_JSON, TEXT_PLAIN};
use token_server_core::{Clock, TokenSource};
use warp::http::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, EXPECT,
    WWW_AUTHENTICATE,
};
use warp::http::{Method, Response, StatusCode};
use warp::Filter;

use crate::connections::{self, ConnectionLimits, Listener};
use crate::observer::{Observer, METRICS_PATH};
use crate::redis_store::RedisStore;

/// Where the sessions live. The protocol is the service's either way: the in-memory store
/// answers in [`Service::handle`]; Redis runs the command between the service's decode and
/// encode.
#[derive(Clone, Default)]
pub enum SessionStore {
    /// The service's own in-memory store.
    #[default]
    Memory,
    /// Redis or Redis Cluster, shared with other instances.
    Redis(Arc<RedisStore>),
}

/// How a server runs around its service: where the sessions live, what sees every request,
/// what bounds the connections. The default is the in-memory store, no metrics, and the
/// command line's default limits.
#[derive(Clone, Default)]
pub struct Serving {
    /// Where the sessions live.
    pub store: SessionStore,
    /// Sees every request (in-flight count, metrics).
    pub observer: Arc<Observer>,
    /// Deadlines, connection cap and shutdown budget.
    pub limits: ConnectionLimits,
}

/// Serves `service` on `listener` as `serving` says until `shutdown` resolves; then stops
/// accepting, lets in-flight requests finish within `serving.limits.shutdown_timeout` and
/// drops the connections still open, so the caller's state save runs without a request
/// changing the store under it.
pub async fn run<C, R>(
    listener: impl Into<Listener>,
    service: Arc<Service<C, R>>,
    serving: Serving,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    C: Clock + Send + Sync + 'static,
    R: TokenSource + Send + Sync + 'static,
{
    let Serving {
        store,
        observer,
        limits,
    } = serving;
    let listener = listener.into();
    let address = listener.local_addr()?;
    log::info!("listening on {address}");
    // One shared value for what every answer reads: one reference count per request.
    let answering = Arc::new(Answering {
        service,
        store,
        observer,
    });
    // Two filters: each one more is another state in warp's future, polled, moved and
    // dropped on every request; the method and path come with the head fields.
    let requests = warp::ext::optional::<Head>()
        .and(warp::body::stream())
        .and_then(move |head: Option<Head>, body| {
            // Always there: every request passes through `WithHead` first.
            let head = head.unwrap_or_default();
            // The answer is the whole future: an async block around it would keep a second
            // copy of everything moved into it, and every request's future is moved a
            // dozen times through warp's and hyper's states.
            answer(answering.clone(), head, body)
        });
    let service = WithHead(warp::service(requests));
    connections::serve(listener, service, limits, shutdown).await;
    log::info!("stopped");
    Ok(())
}

/// What every answer reads, shared by all requests.
struct Answering<C, R> {
    service: Arc<Service<C, R>>,
    store: SessionStore,
    observer: Arc<Observer>,
}

/// The paths any host serves: a request for one holds the constant rather than a copy of
/// its path. Only a saving: any other path reaches the protocol as sent, copied.
const KNOWN_PATHS: [&str; 7] = [
    "/token",
    "/dump",
    "/livez",
    "/readyz",
    "/healthz",
    METRICS_PATH,
    "/test-clock",
];

/// `path` as the answer holds it.
fn request_path(path: &str) -> Cow<'static, str> {
    match KNOWN_PATHS.iter().find(|known| **known == path) {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(path.to_owned()),
    }
}

/// The request head as the answer needs it.
#[derive(Clone, Default)]
struct Head {
    method: Method,
    path: Cow<'static, str>,
    fields: HeadFields,
}

/// The header fields the answer reads, taken raw: a value that is not text must reach the
/// protocol as absent or "not JSON", not as a warp rejection.
#[derive(Clone, Default)]
struct HeadFields {
    content_type: Option<HeaderValue>,
    /// Declared body length (hyper has already refused a malformed header).
    content_length: Option<u64>,
    /// `Expect` sent (`100-continue`): such a client sends its body only once told to go
    /// ahead.
    expect: bool,
    /// A value that is not text reaches the protocol as absent (401 with API keys).
    authorization: Option<HeaderValue>,
}

/// Hands warp's filters the [`Head`] of each request: method, path and the header fields
/// looked up by the static header names. warp's header filters take a name as text and
/// parse it on every request; four of them cost about a thousand instructions a request,
/// a tenth of what serving a rotation costs in user space.
#[derive(Clone)]
struct WithHead<S>(S);

impl<S, B> tower_service::Service<warp::http::Request<B>> for WithHead<S>
where
    S: tower_service::Service<warp::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: warp::http::Request<B>) -> Self::Future {
        let head = Head {
            method: request.method().clone(),
            path: request_path(request.uri().path()),
            fields: HeadFields::of(request.headers()),
        };
        request.extensions_mut().insert(head);
        self.0.call(request)
    }
}

impl HeadFields {
    /// The fields of `headers`, in one walk over the few a request carries: a lookup by
    /// name hashes the name, and four of them cost more than comparing each name present
    /// (a standard name compares as a number). The first of a repeated field counts, as
    /// a lookup by name would take it.
    fn of(headers: &warp::http::HeaderMap) -> HeadFields {
        let mut fields = HeadFields::default();
        let (mut content_type, mut content_length, mut authorization) = (false, false, false);
        for (name, value) in headers {
            if name == CONTENT_TYPE {
                if !std::mem::replace(&mut content_type, true) {
                    // The usual value as the constant: a copy of the received one would
                    // count a reference to the request's buffer up and down again.
                    fields.content_type = Some(if value == APPLICATION_JSON {
                        JSON_VALUE
                    } else {
                        value.clone()
                    });
                }
            } else if name == CONTENT_LENGTH {
                if !std::mem::replace(&mut content_length, true) {
                    fields.content_length = value.to_str().ok().and_then(|text| text.parse().ok());
                }
            } else if name == EXPECT {
                fields.expect = true;
            } else if name == AUTHORIZATION && !std::mem::replace(&mut authorization, true) {
                fields.authorization = Some(value.clone());
            }
        }
        fields
    }
}

/// Answers one request, writing the debug line of it when debug logging is on.
async fn answer<C, R, B, S>(
    answering: Arc<Answering<C, R>>,
    head: Head,
    mut body: S,
) -> Result<Response<String>, Infallible>
where
    C: Clock + Send + Sync + 'static,
    R: TokenSource + Send + Sync + 'static,
    B: Buf,
    // warp's body stream is Unpin: it is read in place, with no box per request.
    S: Stream<Item = Result<B, warp::Error>> + Send + Unpin + 'static,
{
    // One debug line per request, as warp's log filter wrote it; its clock read and
    // clone happen only when the line is wanted.
    let logged =
        log::log_enabled!(log::Level::Debug).then(|| (Instant::now(), head.method.clone()));
    let path: &str = &head.path;
    let Answering {
        service,
        store,
        observer,
    } = &*answering;
    // One block, not a second async fn: a nested future would hold its own copy of the
    // head and the body moved into it.
    let response = 'respond: {
        let in_flight = observer.begin();
        let authorization = head
            .fields
            .authorization
            .as_ref()
            .and_then(|value| value.to_str().ok());
        if let Some(reply) = observer.answer(head.method.as_str(), path) {
            // The host's own path (/metrics) is guarded by the protocol's API key rule too.
            let reply = service
                .authorize(path, head.method.as_str(), authorization)
                .map_or_else(|refused| refused, |()| reply);
            in_flight.finish_host(&reply);
            break 'respond to_response(reply);
        }
        let limit = service.max_body_bytes();
        // Refused before a byte of the body is read: no point receiving megabytes to refuse.
        let declared_too_large = head
            .fields
            .content_length
            .is_some_and(|length| length > limit as u64);
        let bytes = if declared_too_large {
            None
        } else {
            read_limited(&mut body, limit).await
        };
        let request = Request {
            method: head.method.as_str(),
            path,
            content_type: head
                .fields
                .content_type
                .as_ref()
                .and_then(|value| value.to_str().ok()),
            authorization,
            body: match &bytes {
                Some(bytes) => Body::Complete(bytes),
                None => Body::TooLarge,
            },
        };
        let reply = match store {
            SessionStore::Memory => service.handle(&request),
            // Boxed: a Redis round trip's future is kilobytes, and inline it would make every
            // request's future that large (moved and copied on each request, Redis or not).
            SessionStore::Redis(redis) => Box::pin(redis.handle(service, &request)).await,
        };
        in_flight.finish(&reply);
        let mut response = to_response(reply);
        if bytes.is_none() {
            // The rest of the body is unread; the connection cannot carry another request.
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            // A client that sent `Expect: 100-continue` with a length past the limit is
            // waiting for a go-ahead that will never come, and sends nothing more. One whose
            // body was read (chunked, grown past the limit) got the go-ahead when reading
            // began and is writing the rest: it needs the lingering close like any other.
            if !(head.fields.expect && declared_too_large) {
                linger(body);
            }
        }
        response
    };
    if let Some((started, method)) = logged {
        log::debug!(
            "{method} {path} {} {:.3}ms",
            response.status().as_u16(),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    Ok(response)
}

/// How long a refused body is still read and discarded after the 413 is sent.
const LINGER_TIME: Duration = Duration::from_secs(5);

/// How much of a refused body is read and discarded at most: as much as the largest
/// `--max-body`, so any body the server could be configured to accept gets its 413.
const LINGER_BYTES: usize = 16 * 1024 * 1024;

/// Reads and discards the rest of a refused body for a bounded time and size, as nginx's
/// lingering close does. Closing at once would leave the unread body in the kernel's
/// buffer, and closing a socket with unread data sends a reset that destroys the 413
/// before a client that writes its whole body first (Python's http.client, many SDKs)
/// gets to read it.
fn linger<B, S>(mut body: S)
where
    B: Buf,
    S: Stream<Item = Result<B, warp::Error>> + Send + Unpin + 'static,
{
    tokio::spawn(async move {
        let discard = async {
            let mut discarded = 0usize;
            while let Some(Ok(chunk)) = body.next().await {
                discarded = discarded.saturating_add(chunk.remaining());
                if discarded > LINGER_BYTES {
                    break;
                }
            }
        };
        // Either way the body is dropped now, and hyper closes the connection.
        let _ = tokio::time::timeout(LINGER_TIME, discard).await;
    });
}

/// Reads the whole body, or gives up with `None` as soon as it exceeds `limit`, so a huge
/// body is never buffered. A body that breaks off midway (or times out) is answered as
/// an empty one.
async fn read_limited<B: Buf, S>(body: &mut S, limit: usize) -> Option<Vec<u8>>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
{
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let Ok(mut chunk) = chunk else {
            return Some(Vec::new());
        };
        if bytes.len() + chunk.remaining() > limit {
            return None;
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            bytes.extend_from_slice(part);
            let taken = part.len();
            chunk.advance(taken);
        }
    }
    Some(bytes)
}

/// `application/json` as a header value, made at compile time: its copies share no count.
const JSON_VALUE: HeaderValue = HeaderValue::from_static(APPLICATION_JSON);

/// The protocol's text type as a header value, made at compile time.
const TEXT_VALUE: HeaderValue = HeaderValue::from_static(TEXT_PLAIN);

/// The header value of a reply's content type. `HeaderValue::from_static` checks every
/// byte when its argument is not a constant, ~180 instructions for `application/json`
/// on every answer; the protocol's two types are made once, at compile time.
fn content_type_value(content_type: &'static str) -> HeaderValue {
    match content_type {
        APPLICATION_JSON => JSON_VALUE,
        TEXT_PLAIN => TEXT_VALUE,
        other => HeaderValue::from_static(other),
    }
}

fn to_response(reply: Reply) -> Response<String> {
    let mut response = Response::new(reply.body);
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    if let Some(content_type) = reply.content_type {
        headers.insert(CONTENT_TYPE, content_type_value(content_type));
    }
    if let Some(allow) = reply.allow {
        headers.insert(ALLOW, HeaderValue::from_static(allow));
    }
    if let Some(challenge) = reply.www_authenticate {
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use token_server_core::{ManualClock, OsRandom, TokenStore};

    /// The one walk over the headers reads what lookups by name would: the first of a
    /// repeated field, nothing for an absent one, no length that is not a number.
    #[test]
    fn head_fields_are_the_first_of_each_field() {
        use warp::http::HeaderMap;
        let mut headers = HeaderMap::new();
        headers.append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.append("x-other", HeaderValue::from_static("1"));
        headers.append(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer first"));
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer second"));
        headers.append(CONTENT_LENGTH, HeaderValue::from_static("42"));
        headers.append(CONTENT_LENGTH, HeaderValue::from_static("7"));
        let fields = HeadFields::of(&headers);
        assert_eq!(fields.content_type.unwrap(), "application/json");
        assert_eq!(fields.authorization.unwrap(), "Bearer first");
        assert_eq!(fields.content_length, Some(42));
        assert!(!fields.expect);

        let mut headers = HeaderMap::new();
        headers.append(EXPECT, HeaderValue::from_static("100-continue"));
        headers.append(CONTENT_LENGTH, HeaderValue::from_static("many"));
        let fields = HeadFields::of(&headers);
        assert!(fields.expect);
        assert_eq!(fields.content_length, None);
        assert!(fields.content_type.is_none() && fields.authorization.is_none());
    }

    /// The protocol's paths are held as constants; any other path reaches the protocol
    /// as sent, so it still gets its 404 (or its test-clock route) there.
    #[test]
    fn a_request_path_reads_as_sent() {
        for path in [
            "/token",
            "/metrics",
            "/test-clock",
            "/test-clock/advance",
            "/",
            "/tokens",
            "/token/",
        ] {
            assert_eq!(request_path(path), path);
        }
        assert!(matches!(request_path("/token"), Cow::Borrowed(_)));
        assert!(matches!(request_path("/tokens"), Cow::Owned(_)));
    }

    /// Every request's future is created, moved into warp's and hyper's state and boxed:
    /// its size is copied several times per request. A Redis round trip inline made it
    /// 2,888 bytes for every request, in memory or not; boxed, the memory store's is ~600.
    #[test]
    fn a_requests_future_stays_small() {
        let service = Arc::new(Service::new(TokenStore::new(
            Duration::from_secs(3600),
            ManualClock::new(0),
            OsRandom,
        )));
        let answering = Arc::new(Answering {
            service,
            store: SessionStore::Memory,
            observer: Arc::new(Observer::default()),
        });
        let head = Head {
            method: Method::PUT,
            path: request_path("/token"),
            fields: HeadFields::default(),
        };
        let body = futures_util::stream::empty::<Result<bytes::Bytes, warp::Error>>();
        let future = answer(answering, head, body);
        let size = std::mem::size_of_val(&future);
        assert!(size <= 1024, "a request's future takes {size} bytes");
    }
}
