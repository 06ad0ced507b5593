//! The listener of both binaries' HTTP servers: HTTP/1.1, with TLS when configured, and the
//! limits that keep slow or too many clients from tying it up. A client has
//! `read_header_timeout` to send its request head, counted for the first one from when it
//! connected and for the next from the last answer, and [`MAX_WRITE_STALL`] to take some of
//! an answer (the connection is closed otherwise; see the `deadlines` module). At most
//! `max_connections` are open at once (more are closed at once, and counted), HTTP/2 is
//! refused, and with client certificates configured the handshake asks for one without
//! requiring it: probes and Prometheus connect without, and the remediator's webhook and API
//! refuse requests that came without one. Every request carries the client's address
//! (axum's `ConnectInfo`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum_server::accept::{Accept, DefaultAcceptor};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use axum_server::Handle;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ServerTls;

mod deadlines;
use deadlines::{Deadlines, Timeouts};

/// Called for each connection closed on arrival because `max_connections` were open.
pub type OnRefused = Arc<dyn Fn() + Send + Sync>;

/// Whether the connection a request came on presented a client certificate that the
/// configured CA signed (rustls verified it during the handshake).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCertificate(pub bool);

/// The defaults of both binaries: a client that has not sent its request's head by then is
/// slow on purpose or broken.
pub const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that takes nothing of an answer for this long is gone or slow on purpose: it
/// is disconnected. Generous, because answers are written whole and a client on a slow link
/// still takes some of it every few seconds.
pub const MAX_WRITE_STALL: Duration = Duration::from_secs(60);
/// Prometheus, Alertmanager, probes and people need a handful; 256 leaves room for many
/// replicas of each and still bounds what slow clients can hold.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// How long a client may take, and how many may be connected.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// For a request head, counted from the connection's start for the first one and from
    /// the last answer for the next.
    pub read_header_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_header_timeout: DEFAULT_READ_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl Limits {
    fn timeouts(&self) -> Timeouts {
        Timeouts {
            head: self.read_header_timeout,
            write: MAX_WRITE_STALL,
        }
    }
}

/// Serves `router` on `listener` until `handle` shuts it down.
pub async fn serve(
    listener: std::net::TcpListener,
    tls: Option<&ServerTls>,
    limits: Limits,
    on_refused: OnRefused,
    handle: Handle<SocketAddr>,
    router: Router,
) -> io::Result<()> {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    listener.set_nonblocking(true)?;
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    match tls {
        Some(tls) => {
            let acceptor = CertificateAcceptor {
                tls: RustlsAcceptor::new(RustlsConfig::from_config(tls.config.clone()))
                    .handshake_timeout(limits.read_header_timeout),
            };
            let mut server = axum_server::from_tcp(listener)?
                .acceptor(Limited {
                    inner: acceptor,
                    slots,
                    on_refused,
                    timeouts: limits.timeouts(),
                })
                .handle(handle);
            configure(server.http_builder(), limits);
            server.serve(service).await
        }
        None => {
            let mut server = axum_server::from_tcp(listener)?
                .acceptor(Limited {
                    inner: DefaultAcceptor,
                    slots,
                    on_refused,
                    timeouts: limits.timeouts(),
                })
                .handle(handle);
            configure(server.http_builder(), limits);
            server.serve(service).await
        }
    }
}

fn configure(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    limits: Limits,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.read_header_timeout);
}

/// Counts connections against `slots`; one over the limit is closed as soon as accepted.
/// Each one accepted is held to `timeouts` ([`Deadlines`]).
#[derive(Clone)]
struct Limited<A> {
    inner: A,
    slots: Arc<Semaphore>,
    on_refused: OnRefused,
    timeouts: Timeouts,
}

impl<A, S> Accept<TcpStream, S> for Limited<A>
where
    A: Accept<TcpStream, S> + Clone + Send + 'static,
    A::Future: Send,
    A::Stream: Send,
    A::Service: Send,
    S: Send + 'static,
{
    type Stream = Counted<A::Stream>;
    type Service = A::Service;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            (self.on_refused)();
            tracing::debug!("connection limit reached; closing a new connection");
            return Box::pin(std::future::ready(Err(io::Error::other(
                "connection limit reached",
            ))));
        };
        let accepted = self.inner.accept(stream, service);
        let timeouts = self.timeouts;
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            Ok((
                Counted {
                    stream: Deadlines::new(stream, timeouts),
                    _slot: slot,
                },
                service,
            ))
        })
    }
}

/// A connection holding its slot until it closes.
struct Counted<S> {
    stream: Deadlines<S>,
    _slot: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The TLS handshake, then whether the client presented a certificate, for every request
/// on the connection to carry as a [`ClientCertificate`] extension.
#[derive(Clone)]
struct CertificateAcceptor {
    tls: RustlsAcceptor,
}

impl<S> Accept<TcpStream, S> for CertificateAcceptor
where
    S: Send + 'static,
{
    type Stream = <RustlsAcceptor as Accept<TcpStream, S>>::Stream;
    type Service = WithCertificate<S>;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let handshake = self.tls.accept(stream, service);
        Box::pin(async move {
            let (stream, inner) = handshake.await?;
            let presented = stream
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|certificates| !certificates.is_empty());
            let certificate = ClientCertificate(presented);
            Ok((stream, WithCertificate { inner, certificate }))
        })
    }
}

/// The connection's service, adding its [`ClientCertificate`] to every request.
#[derive(Clone)]
pub struct WithCertificate<S> {
    inner: S,
    certificate: ClientCertificate,
}

impl<S, B> tower::Service<http::Request<B>> for WithCertificate<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.certificate);
        self.inner.call(request)
    }
}
