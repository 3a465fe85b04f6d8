//! The upstream of the proxy benchmark: `/` answers 13 bytes, `/4k` answers 4 KiB.
//!
//! ```text
//! tiny_upstream --listen 127.0.0.1:9001
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn main() -> std::io::Result<()> {
    let mut listen = "127.0.0.1:9001".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--listen", Some(v)) => listen = v,
            _ => {
                eprintln!("usage: tiny_upstream --listen HOST:PORT");
                std::process::exit(2);
            }
        }
    }
    let small = Bytes::from_static(b"Hello, world!");
    let large = Bytes::from(vec![b'x'; 4096]);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(&listen).await?;
            println!("tiny_upstream listening on {}", listener.local_addr()?);
            loop {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                let (small, large) = (small.clone(), large.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<_>| {
                        let body = if req.uri().path() == "/4k" {
                            large.clone()
                        } else {
                            small.clone()
                        };
                        async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
}
