//! How long a client may keep a connection waiting on it.
//!
//! hyper bounds a request head only once it knows the protocol, and after the first request
//! only from the head's first byte: a client that connects and sends nothing, or keeps an
//! idle connection alive, would hold one of the `max_connections` slots for ever, and
//! `max_connections` such clients would shut everyone else out (hyper#3756, hyper#3962).
//! So the listener bounds, from its own side of the socket:
//! - the first request head: complete within `read_header_timeout` of the connection's
//!   start (of the TLS handshake's end with TLS);
//! - the next request on a kept-alive connection: its head complete within
//!   `read_header_timeout` of the last write of the answer before (as hyper counts it, from
//!   when it starts reading the next head);
//! - every write: one the client does not read for [`super::MAX_WRITE_STALL`] fails.
//!
//! While a request is being handled the client is not the one keeping anyone waiting, so
//! reads are not bounded then (a body has the remediator's `read_body_timeout`).
//!
//! A connection that opens with HTTP/2's preface is refused: the listener serves HTTP/1.1
//! (as its TLS ALPN says), and hyper-util would otherwise serve HTTP/2 past these bounds.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long a client may keep a connection waiting: for a request head (the next one
/// counted from the last response), and to take what the server writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timeouts {
    pub head: Duration,
    pub write: Duration,
}

/// What a client sends first to speak HTTP/2 without asking (RFC 9113, 3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection waits for, as far as the client's deadlines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Reading a request head, which must be complete by `by`. `line_empty`: the bytes
    /// since the last line feed were at most a carriage return, so one more line feed ends
    /// the head.
    Head { by: Instant, line_empty: bool },
    /// A request is with the server.
    Handling,
    /// The response was written at `since`; the next request is due from then.
    Idle { since: Instant },
}

impl Phase {
    /// A connection accepted (or through its TLS handshake) at `now`.
    pub(super) fn start(now: Instant, head: Duration) -> Self {
        Phase::Head {
            by: now + head,
            line_empty: false,
        }
    }

    /// `bytes` arrived from the client.
    pub(super) fn read(self, bytes: &[u8], head: Duration) -> Self {
        if bytes.is_empty() {
            return self;
        }
        let (by, mut line_empty) = match self {
            Phase::Head { by, line_empty } => (by, line_empty),
            Phase::Idle { since } => (since + head, false),
            Phase::Handling => return Phase::Handling,
        };
        // A head ends with an empty line; HTTP/1.1 parsers accept a bare line feed as a
        // line's end, so a carriage return alone does not make a line non-empty.
        for &byte in bytes {
            match byte {
                b'\n' if line_empty => return Phase::Handling,
                b'\n' => line_empty = true,
                b'\r' => {}
                _ => line_empty = false,
            }
        }
        Phase::Head { by, line_empty }
    }

    /// The server wrote to the client at `now`.
    pub(super) fn wrote(self, now: Instant) -> Self {
        Phase::Idle { since: now }
    }

    /// When a read still waiting for the client fails, if ever.
    pub(super) fn read_deadline(self, head: Duration) -> Option<Instant> {
        match self {
            Phase::Head { by, .. } => Some(by),
            Phase::Idle { since } => Some(since + head),
            Phase::Handling => None,
        }
    }
}

/// A connection's stream, failing reads and writes the client keeps waiting past their
/// deadline with [`io::ErrorKind::TimedOut`] (the server then closes it).
pub(super) struct Deadlines<S> {
    stream: S,
    timeouts: Timeouts,
    phase: Phase,
    /// How much of [`HTTP2_PREFACE`] the connection opened with, until it differs.
    preface_matched: Option<usize>,
    read_timer: Pin<Box<Sleep>>,
    /// Since when a write has been waiting for the client, and its timer.
    write_wait: Option<Pin<Box<Sleep>>>,
}

impl<S> Deadlines<S> {
    pub(super) fn new(stream: S, timeouts: Timeouts) -> Self {
        let now = Instant::now();
        let phase = Phase::start(now, timeouts.head);
        Deadlines {
            stream,
            timeouts,
            phase,
            preface_matched: Some(0),
            read_timer: Box::pin(tokio::time::sleep_until(now + timeouts.head)),
            write_wait: None,
        }
    }

    /// Called when a write returned `Pending`: an error once it has waited `timeouts.write`.
    fn write_waited_too_long(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.timeouts.write;
        let timer = self
            .write_wait
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(timed_out("the client read nothing of the response")),
            Poll::Pending => Poll::Pending,
        }
    }

    /// A write-like call's outcome: a write that went through ends the wait for the client,
    /// and one that wrote bytes starts the wait for its next request.
    fn after_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
        wrote_bytes: impl FnOnce(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(outcome) => {
                self.write_wait = None;
                if outcome.as_ref().is_ok_and(wrote_bytes) {
                    self.phase = self.phase.wrote(Instant::now());
                }
                Poll::Ready(outcome)
            }
            Poll::Pending => self.write_waited_too_long(cx).map(Err),
        }
    }
}

/// How much of [`HTTP2_PREFACE`] a connection has sent after `bytes`, given `matched`
/// before; `None` once it differs (and it is not HTTP/2's).
fn preface_progress(matched: usize, bytes: &[u8]) -> Option<usize> {
    let rest = &HTTP2_PREFACE[matched..];
    let compared = bytes.len().min(rest.len());
    (bytes[..compared] == rest[..compared]).then_some(matched + compared)
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadlines<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                if let Some(matched) = this.preface_matched {
                    this.preface_matched = preface_progress(matched, fresh);
                    if this.preface_matched == Some(HTTP2_PREFACE.len()) {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "HTTP/2 is not served here, HTTP/1.1 is",
                        )));
                    }
                }
                this.phase = this.phase.read(fresh, this.timeouts.head);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                let Some(deadline) = this.phase.read_deadline(this.timeouts.head) else {
                    return Poll::Pending;
                };
                if this.read_timer.deadline() != deadline {
                    this.read_timer.as_mut().reset(deadline);
                }
                match this.read_timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(timed_out(match this.phase {
                        Phase::Idle { .. } => "the connection was idle too long",
                        _ => "the request head took too long",
                    }))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadlines<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.after_write(cx, polled, |&written| written > 0)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.after_write(cx, polled, |&written| written > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A TLS stream writes what it buffered here: as slow a client as any write. hyper
        // flushes on every turn of its loop, so a flush alone is no response.
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.after_write(cx, polled, |_| false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const HEAD: Duration = Duration::from_secs(10);
    const WRITE: Duration = Duration::from_secs(60);
    const TIMEOUTS: Timeouts = Timeouts {
        head: HEAD,
        write: WRITE,
    };

    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn the_first_head_is_due_from_the_start_however_it_trickles() {
        let start = Instant::now();
        let mut phase = Phase::start(start, HEAD);
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n" {
            phase = phase.read(&[*byte], HEAD);
            assert_eq!(phase.read_deadline(HEAD), Some(at(start, 10)), "{phase:?}");
        }
        assert_eq!(phase.read(b"\r\n", HEAD), Phase::Handling);
    }

    #[test]
    fn a_head_ends_at_its_empty_line_with_or_without_carriage_returns() {
        let start = Instant::now();
        for head in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\n\n",
            b"GET / HTTP/1.1\r\nA: b\n\r\n",
            b"\r\nGET / HTTP/1.1\r\n\r\n",
        ] {
            let phase = Phase::start(start, HEAD).read(head, HEAD);
            assert_eq!(phase, Phase::Handling, "{head:?}");
            let short = Phase::start(start, HEAD).read(&head[..head.len() - 1], HEAD);
            assert!(
                matches!(short, Phase::Head { .. }),
                "{head:?} cut short: {short:?}"
            );
        }
        let not_ended = Phase::start(start, HEAD).read(b"GET / HTTP/1.1\r\nA: b\r\r\n", HEAD);
        assert!(matches!(not_ended, Phase::Head { .. }), "{not_ended:?}");
    }

    #[test]
    fn handling_has_no_read_deadline_and_a_response_starts_the_idle_one() {
        let start = Instant::now();
        let handling = Phase::start(start, HEAD).read(b"POST / HTTP/1.1\r\n\r\nbody", HEAD);
        assert_eq!(handling.read_deadline(HEAD), None);
        // A body arriving while the request is handled changes nothing.
        assert_eq!(handling.read(b"more body", HEAD), Phase::Handling);

        let idle = handling.wrote(at(start, 30));
        assert_eq!(idle.read_deadline(HEAD), Some(at(start, 40)));
        // Each write of a response moves the deadline on.
        assert_eq!(
            idle.wrote(at(start, 35)).read_deadline(HEAD),
            Some(at(start, 45))
        );
    }

    #[test]
    fn the_next_request_is_due_from_the_last_answer() {
        let start = Instant::now();
        let idle = Phase::start(start, HEAD)
            .read(b"GET / HTTP/1.1\r\n\r\n", HEAD)
            .wrote(at(start, 1));
        let next = idle.read(b"GET", HEAD);
        assert_eq!(next.read_deadline(HEAD), Some(at(start, 11)));
        assert_eq!(next.read(b" / HTTP/1.1\r\n\r\n", HEAD), Phase::Handling);
    }

    #[test]
    fn nothing_read_changes_nothing() {
        let start = Instant::now();
        let phase = Phase::start(start, HEAD);
        assert_eq!(phase.read(b"", HEAD), phase);
    }

    #[test]
    fn the_http2_preface_is_recognised_however_it_is_split() {
        assert_eq!(preface_progress(0, HTTP2_PREFACE), Some(24));
        assert_eq!(preface_progress(0, b"PRI * HT"), Some(8));
        assert_eq!(
            preface_progress(8, b"TP/2.0\r\n\r\nSM\r\n\r\nframes"),
            Some(24)
        );
        assert_eq!(preface_progress(0, b"GET / HTTP/1.1"), None);
        assert_eq!(preface_progress(0, b"PRIVATE"), None);
        assert_eq!(preface_progress(3, b""), Some(3));
    }

    /// A connection's server side wrapped in [`Deadlines`], and its client side (which holds
    /// at most `buffer` bytes the server wrote and the client has not read).
    fn connection(buffer: usize) -> (Deadlines<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (server, client) = tokio::io::duplex(buffer);
        (Deadlines::new(server, TIMEOUTS), client)
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_sends_nothing_is_cut_off_at_the_head_timeout() {
        let (mut server, _client) = connection(1024);
        let started = Instant::now();
        let error = server.read(&mut [0; 64]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), HEAD);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_under_way_waits_and_an_idle_connection_is_cut_off_at_the_head_timeout() {
        let (mut server, mut client) = connection(1024);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buffer = [0; 18];
        server.read_exact(&mut buffer).await.unwrap();
        // Handling: a read waits for the client however long the handler takes.
        let waiting = tokio::time::timeout(HEAD * 10, server.read(&mut buffer)).await;
        assert!(waiting.is_err(), "a read while handling ended: {waiting:?}");

        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        let answered = Instant::now();
        let error = server.read(&mut buffer).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(answered.elapsed(), HEAD);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_nothing_of_the_answer_is_cut_off_at_the_write_timeout() {
        let (mut server, _client) = connection(16);
        server.write_all(&[b'x'; 16]).await.unwrap();
        let blocked = Instant::now();
        let error = server.write_all(b"more").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(blocked.elapsed(), WRITE);
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_preface_is_refused_and_http1_served() {
        let (mut server, mut client) = connection(1024);
        client.write_all(HTTP2_PREFACE).await.unwrap();
        let error = server.read(&mut [0; 64]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);

        let (mut server, mut client) = connection(1024);
        client
            .write_all(b"PRI-LIKE / HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0; 64];
        let count = server.read(&mut buffer).await.unwrap();
        assert_eq!(&buffer[..count], b"PRI-LIKE / HTTP/1.1\r\n\r\n");
    }
}
