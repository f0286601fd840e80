//! The least a pingora reverse proxy can do (no routing, no header rules, no logging):
//! every request to one upstream over pooled keep-alive connections.
//! Usage: bench-pingora LISTEN_ADDR UPSTREAM_ADDR CONF_YAML
//! (CONF_YAML is pingora's server configuration: its worker threads.)

use async_trait::async_trait;
use pingora_core::server::configuration::Opt;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

struct PassThrough {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for PassThrough {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream), Some(conf)) = (args.next(), args.next(), args.next()) else {
        panic!("usage: bench-pingora LISTEN_ADDR UPSTREAM_ADDR CONF_YAML");
    };
    let opt = Opt {
        conf: Some(conf),
        ..Opt::default()
    };
    let mut server = Server::new(Some(opt)).expect("pingora's server configuration");
    server.bootstrap();
    let mut proxy =
        pingora_proxy::http_proxy_service(&server.configuration, PassThrough { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
