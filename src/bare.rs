//! A bare Pingora proxy hop: the baseline the load benchmark compares
//! tollgate against (`benches/load.sh`), built from the same Pingora
//! version and settings. Not part of the product; hidden from `--help`.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::time::Duration;

struct BareProxy {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for BareProxy {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        peer.options.connection_timeout = Some(Duration::from_secs(1));
        peer.options.read_timeout = Some(Duration::from_secs(30));
        Ok(Box::new(peer))
    }
}

pub fn run(listen: &str, upstream: &str, threads: usize) -> Result<(), crate::cli::CliError> {
    let upstream: SocketAddr = upstream
        .parse()
        .map_err(|_| crate::cli::CliError::Runtime(format!("bad upstream address {upstream}")))?;
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = pingora::server::Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy =
        pingora::proxy::http_proxy_service(&server.configuration, BareProxy { upstream });
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever()
}
