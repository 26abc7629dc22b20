//! The HTTP host: warp turns each request into a protocol [`Request`] and the protocol's
//! [`Reply`] back into a response. No endpoint logic lives here.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Buf;
use futures_util::{Stream, StreamExt};
use token_server_core::protocol::{Body, Reply, Request, Service};
use token_server_core::{Clock, TokenSource};
use warp::http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use warp::http::{Method, Response, StatusCode};
use warp::Filter;

use crate::observer::Observer;

/// Serves `service` on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish. `observer` sees every request (in-flight count, metrics).
pub async fn run<C, R>(
    listener: tokio::net::TcpListener,
    service: Arc<Service<C, R>>,
    observer: Arc<Observer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    C: Clock + Send + Sync + 'static,
    R: TokenSource + Send + Sync + 'static,
{
    let address = listener.local_addr()?;
    log::info!("listening on {address}");
    let requests = warp::method()
        .and(warp::path::full())
        .and(content_type())
        .and(warp::body::stream())
        .and_then(
            move |method: Method, path: warp::path::FullPath, content_type, body| {
                let (service, observer) = (service.clone(), observer.clone());
                async move {
                    let response = answer(
                        &service,
                        &observer,
                        method,
                        path.as_str(),
                        content_type,
                        body,
                    )
                    .await;
                    Ok::<_, Infallible>(response)
                }
            },
        )
        .with(warp::log::custom(|info| {
            log::debug!(
                "{} {} {} {:.3}ms",
                info.method(),
                info.path(),
                info.status().as_u16(),
                info.elapsed().as_secs_f64() * 1000.0
            );
        }));
    warp::serve(requests)
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
    log::info!("stopped");
    Ok(())
}

/// The `Content-Type` header if present; its raw value, since a value that is not text
/// must reach the protocol as "not JSON" (415) rather than as a warp rejection.
fn content_type() -> impl Filter<Extract = (Option<HeaderValue>,), Error = Infallible> + Clone {
    warp::header::value(CONTENT_TYPE.as_str())
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
}

async fn answer<C, R, B>(
    service: &Arc<Service<C, R>>,
    observer: &Observer,
    method: Method,
    path: &str,
    content_type: Option<HeaderValue>,
    body: impl Stream<Item = Result<B, warp::Error>>,
) -> Response<String>
where
    C: Clock + Send + Sync + 'static,
    R: TokenSource + Send + Sync + 'static,
    B: Buf,
{
    let in_flight = observer.begin();
    if let Some(reply) = observer.answer(method.as_str(), path) {
        in_flight.finish_host(&reply);
        return to_response(reply);
    }
    let body = read_limited(body, service.max_body_bytes()).await;
    let request = Request {
        method: method.as_str(),
        path,
        content_type: content_type.as_ref().and_then(|value| value.to_str().ok()),
        body: match &body {
            Some(bytes) => Body::Complete(bytes),
            None => Body::TooLarge,
        },
    };
    let reply = service.handle(&request);
    in_flight.finish(&reply);
    to_response(reply)
}

/// Reads the whole body, or gives up with `None` as soon as it exceeds `limit`, so a huge
/// body is never buffered. A body that breaks off midway is answered as an empty one.
async fn read_limited<B: Buf>(
    body: impl Stream<Item = Result<B, warp::Error>>,
    limit: usize,
) -> Option<Vec<u8>> {
    let mut body = std::pin::pin!(body);
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

fn to_response(reply: Reply) -> Response<String> {
    let mut response = Response::new(reply.body);
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    if let Some(content_type) = reply.content_type {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if let Some(allow) = reply.allow {
        headers.insert(ALLOW, HeaderValue::from_static(allow));
    }
    response
}
