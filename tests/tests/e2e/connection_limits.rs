//! Clients that hold the listener of either binary without finishing a request: slow heads,
//! connections over `max_connections`, connections that send nothing, kept-alive
//! connections left idle, and HTTP/2 where HTTP/1.1 is served. Each is closed within
//! `read_header_timeout` (those over the limit at once) and others are answered meanwhile.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use etcdmedic_tests::ports::free_port;
use etcdmedic_tests::{eventually, project_binary, ExporterProcess, RemediatorService};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::service_hardening::{write_config, TOKEN};

const UNREACHABLE_CLUSTER: &str = "  - name: prod-a\n    endpoints: [http://127.0.0.1:1]\n";

/// Two hundred clients that send a byte every second never finish their request head: each
/// is closed after `read_header_timeout`, those over `max_connections` at once, and the
/// service answers others meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_surplus_connections_are_closed() -> Result<()> {
    const SLOW: usize = 200;
    const LIMIT: usize = 64;
    let header_timeout = Duration::from_secs(2);
    let dir = tempfile::tempdir()?;
    let config = write_config(
        dir.path(),
        UNREACHABLE_CLUSTER,
        &format!("  read_header_timeout: 2s\n  max_connections: {LIMIT}\n"),
    )?;
    let service = RemediatorService::start(&config, Some(TOKEN)).await?;
    let port = service.port;

    slow_heads_are_closed(port, SLOW, header_timeout).await?;
    let metrics = service.metrics().await?;
    let refused: f64 = metrics
        .lines()
        .find(|l| l.starts_with("etcdmedic_remediator_connections_refused_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .context("no refused-connections counter")?;
    ensure!(
        refused >= (SLOW - LIMIT) as f64,
        "{refused} connections refused over the limit of {LIMIT}"
    );
    Ok(())
}

/// `count` clients on `port` sending a request's head a byte a second: each is closed within
/// `header_timeout` (those over the connection limit at once), and `/healthz` answers
/// meanwhile.
async fn slow_heads_are_closed(port: u16, count: usize, header_timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let clients = (0..count).map(|_| async move {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut buffer = [0u8; 256];
        // One byte of the head at a time; at most 20, well past every timeout.
        for byte in b"GET /healthz HTTP/1.1".iter().take(20) {
            if stream.write_all(&[*byte]).await.is_err() {
                return anyhow::Ok(started.elapsed());
            }
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(started.elapsed()),
                Ok(Ok(_)) => return Ok(started.elapsed()),
                Err(_) => {}
            }
        }
        anyhow::bail!("still open after {:?}", started.elapsed())
    });
    let http = etcdmedic_tests::http_client();
    // Every attempt's outcome, for the error should none succeed: the last one alone (all
    // that `eventually` keeps) once hid whether requests were refused or left unanswered.
    let attempts = std::sync::Mutex::new(Vec::new());
    let probe = async {
        // Surplus connections are closed at once, the slow ones after the timeout: a request
        // gets through within it.
        eventually(
            "/healthz answers beside the slow clients",
            Duration::from_secs(10),
            || async {
                let sent = started.elapsed();
                let outcome = http
                    .get(format!("http://127.0.0.1:{port}/healthz"))
                    .send()
                    .await;
                let status = match &outcome {
                    Ok(response) => response.status().to_string(),
                    Err(error) => format!("{error:#}"),
                };
                attempts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(format!("{sent:.1?}..{:.1?}: {status}", started.elapsed()));
                ensure!(outcome?.status() == 200, "{status}");
                Ok(started.elapsed())
            },
        )
        .await
        .with_context(|| {
            let attempts = attempts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            format!("attempts: {}", attempts.join("; "))
        })
    };
    // Each client gives up after its 20 bytes (20 s at most): bounded here as well, so that a
    // connection that never completes cannot hold the test.
    let clients = clients.map(|client| async move {
        tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("a slow client was still waiting after 30s")))
    });
    let (closed, answered) = tokio::join!(futures::future::join_all(clients), probe);
    let mut longest = Duration::ZERO;
    for result in closed {
        longest = longest.max(result?);
    }
    ensure!(
        longest < header_timeout + Duration::from_secs(3),
        "the last slow connection was closed after {longest:?}"
    );
    answered?;
    Ok(())
}

/// The listener's `read_header_timeout` in these tests.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// How late after its timeout a connection may be closed on a busy machine.
const SLACK: Duration = Duration::from_secs(3);

/// Connections that hold every one of `limit` slots without a request under way: half had
/// one request answered and stay open, half sent nothing since they connected. Each is closed
/// [`HEAD_TIMEOUT`] after its answer or after it connected, not before; a request meanwhile
/// is refused at once, and one after is answered. An HTTP/2 preface is closed unanswered.
async fn silent_and_idle_connections_are_closed(port: u16, limit: usize) -> Result<()> {
    let mut held = Vec::new();
    for _ in 0..limit / 2 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let head = read_head(&mut stream).await?;
        ensure!(
            head.starts_with("HTTP/1.1 200"),
            "a kept-alive /healthz: {head}"
        );
        held.push(("idle", stream, Instant::now()));
    }
    for _ in limit / 2..limit {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        held.push(("silent", stream, Instant::now()));
    }
    // Accepted in order, so every held connection has had its turn before this one.
    let answer = answer_to_healthz(port).await?;
    ensure!(
        answer.is_empty(),
        "with {limit} connections held, a request was answered: {answer}"
    );

    let closed = held.into_iter().map(|(what, stream, since)| async move {
        let after = closed_after(stream, since, HEAD_TIMEOUT + SLACK + SLACK)
            .await
            .with_context(|| format!("a {what} connection"))?;
        anyhow::Ok((what, after))
    });
    let probe = eventually(
        "/healthz answers once the held connections are closed",
        HEAD_TIMEOUT + SLACK,
        || async {
            let answer = answer_to_healthz(port).await?;
            ensure!(answer.starts_with("HTTP/1.1 200"), "answered {answer:?}");
            Ok(())
        },
    );
    let (closed, answered) = tokio::join!(futures::future::join_all(closed), probe);
    answered?;
    // The harness's own client may keep a connection or two to the server alive: silent
    // connections that found no slot for that are closed on arrival.
    let mut surplus = 0;
    for outcome in closed {
        let (what, after) = outcome?;
        if what == "silent" && after < Duration::from_secs(1) {
            surplus += 1;
            continue;
        }
        ensure!(
            after + Duration::from_millis(250) >= HEAD_TIMEOUT && after < HEAD_TIMEOUT + SLACK,
            "a {what} connection was closed {after:?} after its last byte \
             (read_header_timeout {HEAD_TIMEOUT:?})"
        );
    }
    ensure!(
        surplus <= 2,
        "{surplus} silent connections were closed at once"
    );

    let mut http2 = TcpStream::connect(("127.0.0.1", port)).await?;
    http2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
    let mut sent = Vec::new();
    tokio::time::timeout(HEAD_TIMEOUT / 2, http2.read_to_end(&mut sent))
        .await
        .context("an HTTP/2 preface was not closed at once")?
        .ok();
    ensure!(
        sent.is_empty(),
        "an HTTP/2 preface was answered: {:?}",
        String::from_utf8_lossy(&sent)
    );
    Ok(())
}

/// The head of the answer to a `/healthz` on a new connection, or "" when the connection
/// was closed without one.
async fn answer_to_healthz(port: u16) -> Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    // A refused connection may be closed before the request is even written.
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return Ok(String::new());
    }
    Ok(read_head(&mut stream).await.unwrap_or_default())
}

/// Reads a response head (within five seconds); an error if the connection closes first.
async fn read_head(stream: &mut TcpStream) -> Result<String> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let count = stream.read(&mut buffer).await?;
            if count == 0 {
                bail!("closed after {:?}", String::from_utf8_lossy(&head));
            }
            head.extend_from_slice(&buffer[..count]);
        }
        Ok(String::from_utf8_lossy(&head).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .context("no response head within 5s")?
}

/// How long after `since` the server closed `stream` (reading and dropping what it sends);
/// an error if it is still open after `wait`.
async fn closed_after(mut stream: TcpStream, since: Instant, wait: Duration) -> Result<Duration> {
    let mut buffer = [0u8; 1024];
    let closed = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(wait, closed)
        .await
        .with_context(|| format!("still open after {wait:?}"))
}

/// A remediator service limited to a few connections holds against connections that send
/// nothing or idle after a request, and refuses HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_closed_and_http2_is_refused() -> Result<()> {
    const LIMIT: usize = 8;
    let dir = tempfile::tempdir()?;
    let config = write_config(
        dir.path(),
        UNREACHABLE_CLUSTER,
        &format!(
            "  read_header_timeout: {}\n  max_connections: {LIMIT}\n",
            humantime::format_duration(HEAD_TIMEOUT),
        ),
    )?;
    let service = RemediatorService::start(&config, Some(TOKEN)).await?;
    silent_and_idle_connections_are_closed(service.port, LIMIT).await
}

/// The exporter's listener is the remediator's: `--read-header-timeout` and
/// `--max-connections` hold against slow, silent and idle clients the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_closes_slow_silent_idle_and_surplus_connections_too() -> Result<()> {
    const LIMIT: usize = 16;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("etcdmedic.yaml");
    std::fs::write(&config, format!("clusters:\n{UNREACHABLE_CLUSTER}"))?;
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut command =
        ExporterProcess::serve_command(&project_binary("etcdmedic-exporter")?, &config, listen);
    command
        .arg("--read-header-timeout")
        .arg(humantime::format_duration(HEAD_TIMEOUT).to_string())
        .args(["--max-connections", &LIMIT.to_string()]);
    let exporter = ExporterProcess::spawn(command, listen, std::process::Stdio::null()).await?;
    slow_heads_are_closed(listen.port(), 60, HEAD_TIMEOUT).await?;
    silent_and_idle_connections_are_closed(listen.port(), LIMIT).await?;
    drop(exporter);
    Ok(())
}
