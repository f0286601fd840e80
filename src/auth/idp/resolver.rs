//! Name resolution for calls to identity providers that never yields a link-local or
//! cloud metadata address: a provider name that resolves there (by mistake or by a
//! hostile AuthRule) is not reached.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};

use crate::model::is_metadata_ip;

#[derive(Clone)]
pub struct ProviderResolver(GaiResolver);

impl ProviderResolver {
    pub fn new() -> Self {
        Self(GaiResolver::new())
    }
}

type Resolving =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, std::io::Error>> + Send>>;

impl tower_service::Service<Name> for ProviderResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolving = self.0.call(name.clone());
        Box::pin(async move {
            let addrs = allowed(resolving.await?);
            if addrs.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{name} resolves only to link-local or metadata addresses"),
                ));
            }
            Ok(addrs.into_iter())
        })
    }
}

fn allowed(addrs: impl Iterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    addrs.filter(|a| !is_metadata_ip(a.ip())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_addresses_are_dropped_from_answers() {
        let answers: Vec<SocketAddr> = [
            "169.254.169.254:80",
            "10.0.0.5:443",
            "[fe80::1]:443",
            "[fd00:ec2::254]:80",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        assert_eq!(
            allowed(answers.into_iter()),
            ["10.0.0.5:443".parse::<SocketAddr>().unwrap()]
        );
    }
}
