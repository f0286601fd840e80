//! The sockets of Gateways with addresses of their own (`--gateway-addresses`): opened
//! when a snapshot asks for them, closed when it no longer does, and handed to every
//! data-plane worker to accept on. A socket that cannot be bound is reported, with
//! the error, for its listeners' status; the others are served all the same.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::compile::GatewaySocket;

/// One socket as the workers serve it: until `stopped` turns true (its listener is
/// gone, its protocol changed, or Portcullis stops).
pub struct Served {
    pub socket: GatewaySocket,
    pub listener: Arc<std::net::TcpListener>,
    stop: watch::Sender<bool>,
}

impl Served {
    pub fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }
}

pub struct GatewaySockets {
    open: Mutex<HashMap<SocketAddr, Arc<Served>>>,
    served: watch::Sender<Vec<Arc<Served>>>,
}

impl Default for GatewaySockets {
    fn default() -> Self {
        Self {
            open: Mutex::default(),
            served: watch::Sender::new(Vec::new()),
        }
    }
}

impl GatewaySockets {
    /// What the workers serve, as it changes.
    pub fn subscribe(&self) -> watch::Receiver<Vec<Arc<Served>>> {
        self.served.subscribe()
    }

    /// Opens the sockets `wanted` names and closes the others; a socket whose
    /// protocol changed keeps its port and is served anew. Returns the sockets that
    /// could not be bound, with the error (tried again at every sync).
    pub fn sync(&self, wanted: &[GatewaySocket]) -> BTreeMap<SocketAddr, String> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|addr, served| {
            let keep = wanted.contains(&served.socket);
            let moved = wanted.iter().any(|w| w.addr == *addr);
            if !keep && !moved {
                served.stop.send_replace(true);
            }
            keep || moved
        });
        let mut failed = BTreeMap::new();
        for socket in wanted {
            let listener = match open.get(&socket.addr) {
                Some(served) if served.socket == *socket => continue,
                Some(served) => {
                    // The same port with the other protocol: the socket stays bound.
                    served.stop.send_replace(true);
                    served.listener.clone()
                }
                None => match bind(socket.addr) {
                    Ok(l) => Arc::new(l),
                    Err(e) => {
                        tracing::warn!(address = %socket.addr, error = %e, "cannot listen for a Gateway listener");
                        failed.insert(
                            socket.addr,
                            format!("cannot listen on {}: {e}", socket.addr),
                        );
                        continue;
                    }
                },
            };
            let served = Served {
                socket: *socket,
                listener,
                stop: watch::Sender::new(false),
            };
            open.insert(socket.addr, Arc::new(served));
        }
        self.served.send_replace(open.values().cloned().collect());
        failed
    }

    /// Stops serving every socket (shutdown): the workers drain their connections.
    pub fn close_all(&self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        for served in open.values() {
            served.stop.send_replace(true);
        }
        open.clear();
        self.served.send_replace(Vec::new());
    }
}

/// A listening socket ready for any runtime (non-blocking).
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(addr: &str, tls: bool) -> GatewaySocket {
        GatewaySocket {
            addr: addr.parse().unwrap(),
            tls,
            passthrough: false,
        }
    }

    #[test]
    fn sockets_open_change_protocol_and_close_as_asked() {
        let sockets = GatewaySockets::default();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = socket(&taken.local_addr().unwrap().to_string(), false);
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let plain = socket(&addr.to_string(), false);
        let failed = sockets.sync(&[plain, busy]);
        assert_eq!(failed.keys().collect::<Vec<_>>(), vec![&busy.addr]);
        assert!(failed[&busy.addr].contains("cannot listen on"));
        let first = sockets.subscribe().borrow().clone();
        assert_eq!(first.len(), 1, "the one that could be bound is served");
        let stopped = first[0].stopped();
        // The same port as TLS: the old serving stops, the socket is the same one.
        sockets.sync(&[socket(&addr.to_string(), true)]);
        assert!(*stopped.borrow());
        let second = sockets.subscribe().borrow().clone();
        assert!(Arc::ptr_eq(&first[0].listener, &second[0].listener));
        assert!(second[0].socket.tls);
        drop((first, second));
        sockets.sync(&[]);
        assert!(sockets.subscribe().borrow().is_empty());
        // Closed: the port can be bound again.
        std::net::TcpListener::bind(addr).expect("the socket was closed");
    }
}
