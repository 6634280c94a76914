//! One Postgres connection: pgwire's TLS negotiation and message loop, with
//! the length of every frame checked before pgwire's decoder reads it.
//!
//! ```text
//!  TCP ─▶ negotiate_tls (SSLRequest, direct TLS) ─▶ FrameGuard ─▶ pgwire's codec ─▶ process_message
//!                                                    └ a frame shorter than its own header, over 16 MiB,
//!                                                      or one whose fields overrun it: the connection ends
//! ```
//!
//! pgwire 0.42's decoder trusts what a frame says of itself: it subtracts
//! the header from the declared length unchecked (a frame claiming fewer
//! than 4 bytes panics the connection's task), and it reads a message's
//! fields from the whole buffer rather than the frame, with `get_u16` and
//! `split_to` that panic past its end (a `Bind` whose parameter claims more
//! bytes than were sent) and C strings that run on into the next frame. The
//! guard follows the frames as their bytes arrive (decrypted, above TLS),
//! checks every message pgwire would decode field by field against its own
//! frame before the frame's last byte reaches pgwire, and ends a connection
//! sending anything else with an I/O error; the loop is pgwire's own
//! `process_socket` otherwise.

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

/// The largest frame a client may send: 16 MiB, far above any statement or
/// its parameters. pgwire buffers a whole frame before decoding it, and
/// would take up to 1 GiB for CopyData (a read-only endpoint copies nothing
/// in); the guard also holds the frames whose fields it checks.
const MAX_FRAME: usize = 16 << 20;

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
/// header it ends is an error, and so is a typed message that is not
/// [`well_formed`].
struct FrameGuard<S> {
    inner: S,
    untyped: bool,
    header: [u8; 8],
    have: usize,
    body_left: usize,
    /// The type and the bytes so far of a frame being checked.
    held: Option<(u8, Vec<u8>)>,
}

impl<S> FrameGuard<S> {
    fn new(inner: S) -> Self {
        Self { inner, untyped: true, header: [0; 8], have: 0, body_left: 0, held: None }
    }

    /// Checks the held frame once its last byte has arrived.
    fn check_held(&mut self) -> io::Result<()> {
        if self.body_left > 0 {
            return Ok(());
        }
        match self.held.take() {
            Some((kind, body)) if !well_formed(kind, &body) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a malformed Postgres message of type {:?} ({} bytes)", kind as char, body.len()),
            )),
            _ => Ok(()),
        }
    }

    /// Follows `bytes`, the next ones of the stream.
    fn follow(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let skip = self.body_left.min(bytes.len());
                if let Some((_, body)) = &mut self.held {
                    body.extend_from_slice(&bytes[..skip]);
                }
                self.body_left -= skip;
                bytes = &bytes[skip..];
                self.check_held()?;
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
            if self.body_left > MAX_FRAME {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a Postgres message of {length} bytes, over the {MAX_FRAME} accepted"),
                ));
            }
            if self.untyped {
                if !matches!(word(4), SSL_REQUEST | GSSENC_REQUEST) {
                    self.untyped = false;
                }
            } else if CHECKED.contains(&self.header[0]) {
                self.held = Some((self.header[0], Vec::with_capacity(self.body_left.min(1 << 16))));
                self.check_held()?;
            }
        }
        Ok(())
    }
}

/// The message types pgwire decodes field by field: Query, Parse, Bind,
/// Close, Describe, Execute, Flush, Sync, Terminate, CopyDone and CopyFail
/// (CopyData and the password family it takes whole).
const CHECKED: &[u8] = b"QPBCDEHSXcf";

/// Whether `body` holds exactly the fields pgwire 0.42 reads for a message
/// of type `kind`: each C string ended inside it, each count's items there,
/// nothing after the last.
fn well_formed(kind: u8, body: &[u8]) -> bool {
    let mut fields = Fields(body);
    let read = match kind {
        b'Q' | b'f' => fields.cstring(),
        b'P' => fields.cstring() && fields.cstring() && fields.counted(4),
        b'B' => fields.cstring() && fields.cstring() && fields.counted(2) && fields.parameters() && fields.counted(2),
        b'C' | b'D' => fields.take(1) && fields.cstring(),
        b'E' => fields.cstring() && fields.take(4),
        _ => true,
    };
    read && fields.0.is_empty()
}

/// The unread rest of a message's body.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take(&mut self, n: usize) -> bool {
        match self.0.split_at_checked(n) {
            Some((_, rest)) => {
                self.0 = rest;
                true
            }
            None => false,
        }
    }

    fn cstring(&mut self) -> bool {
        self.0.iter().position(|&b| b == 0).is_some_and(|end| self.take(end + 1))
    }

    fn count(&mut self) -> Option<usize> {
        let (count, rest) = self.0.split_first_chunk::<2>()?;
        self.0 = rest;
        Some(u16::from_be_bytes(*count) as usize)
    }

    /// A 16-bit count, then that many items of `width` bytes.
    fn counted(&mut self, width: usize) -> bool {
        self.count().is_some_and(|n| self.take(n * width))
    }

    /// Bind's parameters: a count, then for each a 32-bit length (negative:
    /// NULL) and that many bytes.
    fn parameters(&mut self) -> bool {
        let Some(n) = self.count() else { return false };
        (0..n).all(|_| {
            let Some((length, rest)) = self.0.split_first_chunk::<4>() else { return false };
            self.0 = rest;
            match usize::try_from(i32::from_be_bytes(*length)) {
                Ok(length) => self.take(length),
                Err(_) => true,
            }
        })
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
    use super::{FrameGuard, MAX_FRAME};

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

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        [typed(kind, body.len() as u32 + 4), body.to_vec()].concat()
    }

    /// The extended protocol's messages pass as a driver sends them, byte by
    /// byte too; one whose fields overrun its frame (the Bind below made
    /// pgwire's `split_to` panic) or leave bytes in it is refused.
    #[test]
    fn messages_whose_fields_overrun_their_frame_are_refused() {
        let startup = [&12u32.to_be_bytes()[..], &196_608u32.to_be_bytes(), b"ab\0\0"].concat();
        let bind_body = |length: i32| {
            [b"\0s1\0".as_slice(), &1u16.to_be_bytes(), &0u16.to_be_bytes(), &2u16.to_be_bytes()]
                .into_iter()
                .chain([length.to_be_bytes().as_slice(), b"42", &(-1i32).to_be_bytes(), &0u16.to_be_bytes()])
                .flatten()
                .copied()
                .collect::<Vec<u8>>()
        };
        let good = [
            message(b'P', &[b"s1\0SELECT $1\0".as_slice(), &1u16.to_be_bytes(), &23u32.to_be_bytes()].concat()),
            message(b'B', &bind_body(2)),
            message(b'D', b"P\0"),
            message(b'E', &[b"\0".as_slice(), &0i32.to_be_bytes()].concat()),
            message(b'S', b""),
            message(b'Q', b"SELECT 1\0"),
            message(b'd', b"any bytes"),
        ]
        .concat();
        let stream = [startup.clone(), good].concat();
        FrameGuard::new(()).follow(&stream).unwrap();
        let mut guard = FrameGuard::new(());
        for byte in &stream {
            guard.follow(std::slice::from_ref(byte)).unwrap();
        }
        assert!(guard.held.is_none());

        let bad = [
            message(b'B', &bind_body(741_109_309)),
            message(b'B', &bind_body(3)),
            message(b'B', &bind_body(1)),
            message(b'P', b"s1\0SELECT 1\0\x00"),
            message(b'Q', b"SELECT 1"),
            message(b'Q', b""),
            message(b'Q', b"SELECT 1\0; more"),
            message(b'E', b"\0\0\0"),
            message(b'C', b""),
            message(b'S', b"x"),
        ];
        for message in bad {
            let stream = [startup.clone(), message.clone()].concat();
            assert!(FrameGuard::new(()).follow(&stream).is_err(), "{message:?} passed");
            let mut guard = FrameGuard::new(());
            let refused = stream.iter().any(|byte| guard.follow(std::slice::from_ref(byte)).is_err());
            assert!(refused, "{message:?} passed byte by byte");
        }
        // Past the limit, any type (CopyData too), refused at its header.
        for kind in [b'B', b'd', b'p'] {
            let huge = [startup.clone(), typed(kind, (MAX_FRAME + 5) as u32)].concat();
            assert!(FrameGuard::new(()).follow(&huge).is_err());
        }
        let huge_startup = [&((MAX_FRAME + 9) as u32).to_be_bytes()[..], &196_608u32.to_be_bytes()].concat();
        assert!(FrameGuard::new(()).follow(&huge_startup).is_err());
    }
}
