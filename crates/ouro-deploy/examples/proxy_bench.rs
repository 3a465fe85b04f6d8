//! Ouro's proxy standalone, for the benchmark in `bench/proxy`:
//!
//! ```text
//! proxy_bench --listen 127.0.0.1:9003 --upstream 127.0.0.1:9001 [--upstream ...] [--threads 1]
//! ```
//!
//! One thread (a current-thread runtime) by default, like nginx with one worker.

use std::net::SocketAddr;

use ouro_deploy::proxy::{Proxy, ProxyOptions};
use ouro_deploy::upstream::Upstream;

struct Args {
    listen: String,
    upstreams: Vec<SocketAddr>,
    threads: usize,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:9003".into(),
        upstreams: Vec::new(),
        threads: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => args.listen = value()?,
            "--upstream" => {
                let v = value()?;
                args.upstreams
                    .push(v.parse().map_err(|e| format!("--upstream {v}: {e}"))?);
            }
            "--threads" => {
                let v = value()?;
                args.threads = v.parse().map_err(|e| format!("--threads {v}: {e}"))?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.upstreams.is_empty() {
        return Err("at least one --upstream HOST:PORT is needed".into());
    }
    Ok(args)
}

fn main() -> std::io::Result<()> {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("proxy_bench: {e}");
            std::process::exit(2);
        }
    };
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        let proxy = Proxy::new(ProxyOptions::default());
        let listen = proxy.listen(&args.listen).await?;
        let upstreams = args
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let u = Upstream::new("bench", "1", i as u32, *addr);
                u.set_ready(true);
                u
            })
            .collect();
        proxy.set_route(listen, None, proxy.route_table("bench", upstreams));
        println!("proxy_bench listening on {listen}");
        tokio::signal::ctrl_c().await?;
        proxy.shutdown().await;
        Ok(())
    })
}
