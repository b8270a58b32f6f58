//! Accepting connections within limits.
//!
//! tonic's own accept loop takes every connection the kernel offers and retries a failed
//! `accept` at once, so a flood of idle connections can use up the process's file descriptors
//! (and then every `open`, including the writer's, fails) while the loop spins. This loop
//! instead:
//! - holds one permit of a semaphore per open connection and stops accepting while none is
//!   free, so the number of connections is capped below the open-file limit;
//! - gives a new connection `first_byte` to send something (the TLS ClientHello or the HTTP/2
//!   preface) before it is handed to the server, so connections that never speak are closed
//!   without taking a place in the server;
//! - waits a little after a failed `accept` (EMFILE, ENFILE, ENOBUFS) instead of spinning.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// An accepted connection holding its place under the connection cap until it is dropped.
pub struct Conn {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
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

/// Waits for a free place under the cap in `slots`, then accepts one connection (with
/// `TCP_NODELAY`: without it every small response waits for a delayed ACK, ~40 ms) holding
/// that place; `None` once `stop` resolves. A failed accept (EMFILE, ENFILE, ENOBUFS) pauses
/// 100 ms and tries again rather than spinning. Shared by the gRPC server and the witness.
pub async fn accept_capped<F: Future<Output = ()> + Unpin>(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    stop: &mut F,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    let permit = tokio::select! {
        p = slots.clone().acquire_owned() => p.ok()?,
        () = &mut *stop => return None,
    };
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, permit));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut *stop => return None,
        }
    }
}

/// Accepts on `listener` until the returned stream is dropped: at most `max_connections` open
/// at once, each handed on once it has sent its first byte within `first_byte`.
pub fn accept(
    listener: TcpListener,
    max_connections: usize,
    first_byte: Duration,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    tokio::spawn(async move {
        let closed = tx.closed();
        tokio::pin!(closed);
        while let Some((stream, permit)) = accept_capped(&listener, &slots, &mut closed).await {
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Ok(Ok(())) = tokio::time::timeout(first_byte, stream.readable()).await {
                    let _ = tx
                        .send(Ok(Conn {
                            stream,
                            _permit: permit,
                        }))
                        .await;
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
