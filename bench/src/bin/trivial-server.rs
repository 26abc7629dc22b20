//! The HTTP stack's ceiling for issue 4's target 1: warp 0.4 parsing each PUT body as JSON
//! and answering a constant `{"Ok":{...}}` document, no store behind it.
//!
//! POST answers a constant token text, so the same wrk chain script drives both servers.
//! Listens on a free port on 127.0.0.1 (logged as `listening on 127.0.0.1:PORT`).
//!
//! `--tls-cert PEM --tls-key PEM`: the same handler over TLS, the baseline of issue 15's
//! TLS figure: the shipped server's rustls config (`token_server::tls`), each accepted
//! connection handed to hyper-util as warp's filter, with none of the shipped server's
//! deadlines, connection cap or bounded shutdown.

use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use token_server::shutdown;
use warp::http::header::CONTENT_TYPE;
use warp::http::{Method, Response};
use warp::Filter;

const TOKEN: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const ROTATED: &str = r#"{"Ok":{"token":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","meta":{"name":"bench user","year":2026,"period":11}}}"#;

fn answer(method: Method, body: Bytes) -> Response<String> {
    if method == Method::PUT {
        let parsed = serde_json::from_slice::<serde_json::Value>(&body);
        let text = if parsed.is_ok() {
            ROTATED
        } else {
            r#"{"Err":"InvalidToken"}"#
        };
        let mut response = Response::new(text.to_string());
        response.headers_mut().insert(
            CONTENT_TYPE,
            warp::http::HeaderValue::from_static("application/json"),
        );
        response
    } else {
        Response::new(TOKEN.to_string())
    }
}

#[tokio::main]
async fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().collect();
    let tls = token_server_bench::tls_from_args(&args);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    log::info!("listening on {}", listener.local_addr().expect("address"));
    let routes = warp::method().and(warp::body::bytes()).map(answer);
    match tls {
        None => {
            warp::serve(routes)
                .incoming(listener)
                .graceful(shutdown::signal())
                .run()
                .await
        }
        Some(tls) => {
            let serving = async {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (acceptor, service) = (tls.acceptor(), warp::service(routes));
                    tokio::spawn(async move {
                        let Ok(stream) = acceptor.accept(stream).await else {
                            return;
                        };
                        let service = TowerToHyperService::new(service);
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            };
            tokio::select! {
                () = serving => {}
                () = shutdown::signal() => {}
            }
        }
    }
}
