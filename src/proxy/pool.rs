//! HTTP/1.1 connections to the pods, kept open between requests. A connection goes
//! back to its target's idle list when its response's body has ended, so no task of
//! its own waits for it to come free; one a pod closed while it was idle is passed
//! over, and a request it could not take (nothing of it sent) goes out again on
//! another. The idle lists are stacks, the most recently used on top, so the rest age
//! out: `sweep` closes those idle past the idle timeout.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};

use super::Body;
use super::clients::{Dialed, Dialer, SendFailure};

/// The most idle connections kept to one target.
const MAX_IDLE_PER_TARGET: usize = 1024;

pub(super) struct H1Pool {
    dialer: Dialer,
    idle_timeout: Duration,
    /// By target (`ip:port`); a target whose connections are all gone is dropped by
    /// `sweep`, so the map follows the endpoints.
    targets: Mutex<HashMap<String, Arc<Target>>>,
}

#[derive(Default)]
struct Target {
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl H1Pool {
    pub(super) fn new(dialer: Dialer, idle_timeout: Duration) -> Self {
        Self {
            dialer,
            idle_timeout,
            targets: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `req` to `target` on an idle connection, or a new one when none is ready.
    pub(super) async fn send(
        &self,
        target: &str,
        mut req: Request<Body>,
    ) -> Result<Response<UpstreamBody>, SendFailure> {
        origin_form(req.uri_mut());
        let slot = self.target(target);
        loop {
            let (mut sender, reused) = match slot.ready(Instant::now(), self.idle_timeout) {
                Some(sender) => (sender, true),
                // Boxed: it holds a TLS handshake, which every request's future would
                // otherwise be as large as, and be moved whole at each level.
                None => (Box::pin(self.connect(target)).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    // An upgraded connection is the tunnel's now.
                    let back =
                        (resp.status() != StatusCode::SWITCHING_PROTOCOLS).then(|| GiveBack {
                            target: slot.clone(),
                            sender,
                        });
                    return Ok(resp.map(|inner| UpstreamBody { inner, back }));
                }
                Err(mut e) => match e.take_message() {
                    // Closed by the pod while it lay idle, before a byte was sent.
                    Some(unsent) if reused => req = unsent,
                    _ => {
                        return Err(SendFailure {
                            connect: false,
                            error: e.into_error().into(),
                        });
                    }
                },
            }
        }
    }

    fn target(&self, target: &str) -> Arc<Target> {
        let mut targets = lock(&self.targets);
        if let Some(t) = targets.get(target) {
            return t.clone();
        }
        targets.entry(target.to_owned()).or_default().clone()
    }

    async fn connect(&self, target: &str) -> Result<SendRequest<Body>, SendFailure> {
        let failed = |error: hyper::Error| SendFailure {
            connect: true,
            error: error.into(),
        };
        let sender = match self.dialer.dial(target).await? {
            Dialed::Plain(io) => handshake(io).await,
            Dialed::Tls(io) => handshake(io).await,
        };
        let mut sender = sender.map_err(failed)?;
        sender.ready().await.map_err(failed)?;
        Ok(sender)
    }

    /// Closes the connections idle past the idle timeout, and forgets targets with
    /// none left and none in use.
    pub(super) fn sweep(&self, now: Instant) {
        let mut targets = lock(&self.targets);
        targets.retain(|_, t| {
            let mut idle = lock(&t.idle);
            idle.retain(|i| !i.sender.is_closed() && !aged(i, now, self.idle_timeout));
            !idle.is_empty() || Arc::strong_count(t) > 1
        });
    }
}

impl Target {
    /// The most recently used idle connection that is ready for a request; those the
    /// pod closed and those aged past the timeout are dropped on the way.
    fn ready(&self, now: Instant, timeout: Duration) -> Option<SendRequest<Body>> {
        let mut idle = lock(&self.idle);
        while let Some(entry) = idle.pop() {
            if entry.sender.is_ready() && !aged(&entry, now, timeout) {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Keeps a connection whose exchange is over. One not ready for another request
    /// (the pod answered before the request's body was all sent) is closed, as nginx
    /// does: kept, it would crowd the stack while an upload trickles in.
    fn give_back(&self, sender: SendRequest<Body>) {
        if !sender.is_ready() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE_PER_TARGET {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

fn aged(idle: &Idle, now: Instant, timeout: Duration) -> bool {
    now.saturating_duration_since(idle.since) >= timeout
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn handshake<I>(io: I) -> Result<SendRequest<Body>, hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new().handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection closed");
        }
    });
    Ok(sender)
}

/// A request to a pod names only its path and query (`GET /x HTTP/1.1`); the pod's
/// address chose the connection and `Host` carries the client's host.
fn origin_form(uri: &mut Uri) {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return;
    }
    *uri = match uri.path_and_query() {
        Some(path) => Uri::from(path.clone()),
        None => Uri::from_static("/"),
    };
}

/// A connection to give back once the response on it has been read to its end.
struct GiveBack {
    target: Arc<Target>,
    sender: SendRequest<Body>,
}

/// A pod's response body; the connection it came on goes back to the pool when it
/// ends, and is closed when it is dropped before its end.
pub struct UpstreamBody {
    inner: Incoming,
    back: Option<GiveBack>,
}

impl UpstreamBody {
    /// A body whose connection is not pooled here (HTTP/2, shared by every request).
    pub(super) fn unpooled(inner: Incoming) -> Self {
        Self { inner, back: None }
    }

    fn ended(&mut self) {
        if let Some(back) = self.back.take() {
            back.target.give_back(back.sender);
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.ended(),
            // Trailers are the last frame, and the server polls no further after them.
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() || this.inner.is_end_stream() => {
                this.ended()
            }
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body with nothing in it (a 204, a HEAD's answer) is never polled.
        if self.inner.is_end_stream() {
            self.ended();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_to_pods_name_only_their_path_and_query() {
        let form = |s: &str| {
            let mut uri: Uri = s.parse().unwrap();
            origin_form(&mut uri);
            uri.to_string()
        };
        assert_eq!(form("http://10.0.0.1:8080/a/b?c=d"), "/a/b?c=d");
        assert_eq!(form("http://10.0.0.1:8080"), "/");
        assert_eq!(form("/a?b"), "/a?b");
        assert_eq!(form("https://h/%2e%2e/x"), "/%2e%2e/x");
    }
}
