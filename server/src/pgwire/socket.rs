//! One Postgres connection: pgwire's TLS negotiation and message loop, with
//! the length of every frame checked before pgwire's decoder reads it.
//!
//! ```text
//!  TCP ─▶ negotiate_tls (SSLRequest, direct TLS) ─▶ FrameGuard ─▶ pgwire's codec ─▶ process_message
//!                                                    └ a frame shorter than its own header: the connection ends
//! ```
//!
//! pgwire 0.42's decoder subtracts the header from a frame's declared
//! length unchecked, so a frame claiming fewer than 4 bytes panics the
//! connection's task. The guard follows the frames as their bytes arrive
//! (decrypted, above TLS) and ends such a connection with an I/O error; the
//! loop is pgwire's own `process_socket` otherwise.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::StreamExt;
use pgwire::api::{ClientInfo, ErrorHandler, NoopHandler, PgWireConnectionState};
use pgwire::messages::PgWireFrontendMessage;
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

use super::PgServer;

/// How long a client has to log in (pgwire's own limit).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The request codes a client may send, untyped, before its startup message.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

/// Serves one client of `server` on `socket`, speaking TLS through `tls`
/// when the client asks for it.
pub(super) async fn serve(
    socket: TcpStream,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    server: Arc<PgServer>,
) -> io::Result<()> {
    let startup_timeout = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup_timeout);
    let negotiated = tokio::select! {
        _ = &mut startup_timeout => return Ok(()),
        negotiated = negotiate_tls::<String>(socket, tls) => negotiated?,
    };
    // A client asking for direct TLS of a server without it.
    let Some(negotiated) = negotiated else { return Ok(()) };
    let old = negotiated.into_parts();
    let mut guard = FrameGuard::new(old.io);
    guard.follow(&old.read_buf)?;
    let mut parts = FramedParts::new(guard, old.codec);
    parts.read_buf = old.read_buf;
    parts.write_buf = old.write_buf;
    let mut socket = Framed::from_parts(parts);

    let (startup, none) = (server.startup.clone(), Arc::new(NoopHandler));
    loop {
        let logging_in = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup | PgWireConnectionState::AuthenticationInProgress
        );
        let message = if logging_in {
            tokio::select! {
                _ = &mut startup_timeout => None,
                message = socket.next() => message,
            }
        } else {
            socket.next().await
        };
        // The end of the stream, a message pgwire could not decode, or a frame the guard refused.
        let Some(Ok(message)) = message else { break };
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        let extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        let cancel_request = matches!(message, PgWireFrontendMessage::CancelRequest(_));
        let handled = process_message(
            message,
            &mut socket,
            startup.clone(),
            server.clone(),
            server.clone(),
            none.clone(),
            none.clone(),
        )
        .await;
        if let Err(mut error) = handled {
            none.on_error(&socket, &mut error);
            let fatal = error.is_fatal();
            process_error(&mut socket, error, extended_query).await?;
            if fatal {
                break;
            }
        }
        if cancel_request {
            break;
        }
    }
    Ok(())
}

/// A stream whose bytes are followed frame by frame: first the untyped
/// messages (length, then a request code or the protocol version), then
/// typed ones (a type byte, then the length). A length shorter than the
/// header it ends is an error.
struct FrameGuard<S> {
    inner: S,
    untyped: bool,
    header: [u8; 8],
    have: usize,
    body_left: usize,
}

impl<S> FrameGuard<S> {
    fn new(inner: S) -> Self {
        Self { inner, untyped: true, header: [0; 8], have: 0, body_left: 0 }
    }

    /// Follows `bytes`, the next ones of the stream.
    fn follow(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let skip = self.body_left.min(bytes.len());
                self.body_left -= skip;
                bytes = &bytes[skip..];
                continue;
            }
            // Untyped: length (4) and code (4); typed: type (1) and length (4).
            let header_len = if self.untyped { 8 } else { 5 };
            let take = (header_len - self.have).min(bytes.len());
            self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
            self.have += take;
            bytes = &bytes[take..];
            if self.have < header_len {
                continue;
            }
            self.have = 0;
            let word = |at: usize| {
                u32::from_be_bytes([self.header[at], self.header[at + 1], self.header[at + 2], self.header[at + 3]])
            };
            let (length, counted) = if self.untyped { (word(0), 8) } else { (word(1), 4) };
            if length < counted {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a Postgres frame of {length} bytes, shorter than its {counted}-byte header"),
                ));
            }
            self.body_left = (length - counted) as usize;
            if self.untyped && !matches!(word(4), SSL_REQUEST | GSSENC_REQUEST) {
                self.untyped = false;
            }
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGuard<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let this = &mut *self;
        Poll::Ready(this.follow(&buf.filled()[before..]))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameGuard<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::FrameGuard;

    fn typed(kind: u8, length: u32) -> Vec<u8> {
        [&[kind][..], &length.to_be_bytes()].concat()
    }

    #[test]
    fn frames_are_followed_across_reads_and_short_ones_refused() {
        let startup = [&12u32.to_be_bytes()[..], &196_608u32.to_be_bytes(), b"ab\0\0"].concat();
        let ssl = [&8u32.to_be_bytes()[..], &80_877_103u32.to_be_bytes()].concat();
        let query = [typed(b'Q', 13), b"SELECT 1\0".to_vec()].concat();
        let stream = [ssl, startup, query.clone(), query].concat();
        // Byte by byte, or all at once: the same frames.
        let mut guard = FrameGuard::new(());
        for byte in &stream {
            guard.follow(std::slice::from_ref(byte)).unwrap();
        }
        assert_eq!((guard.untyped, guard.have, guard.body_left), (false, 0, 0));
        FrameGuard::new(()).follow(&stream).unwrap();

        for short in [typed(b'p', 3), typed(b'p', 0)] {
            let bad = [&stream[..], &short].concat();
            assert!(FrameGuard::new(()).follow(&bad).is_err());
        }
        let short_startup = [&6u32.to_be_bytes()[..], &[0u8; 4]].concat();
        assert!(FrameGuard::new(()).follow(&short_startup).is_err());
    }
}
