//! A connection's socket, plain TCP or TLS, for `listen`, the proxy (both
//! sides) and the emulator: one type to read and write, and a way to wait
//! for bytes that lets a plain socket read into the thread's shared buffer
//! (an idle connection then holds no read buffer), while TLS reads into the
//! connection's own.

use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Plain TCP, or TLS over it (`T`: rustls's client or server stream).
pub enum Sock<T> {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<T>),
}

impl<T: AsyncRead + Unpin> AsyncRead for Sock<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Sock::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Sock::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Sock<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Sock::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Sock::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Sock::Plain(s) => Pin::new(s).poll_flush(cx),
            Sock::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Sock::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Sock::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl<T: AsyncRead + Unpin> Sock<T> {
    /// Wait for bytes: a plain socket says it is readable (the caller then
    /// reads them with [`Sock::try_read_plain`] into the thread's buffer,
    /// `Ok(None)`); TLS reads them into `buf` (`Ok(Some(n))`, 0 at the end).
    pub async fn wait_read(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
        match self {
            Sock::Plain(s) => s.readable().await.map(|_| None),
            Sock::Tls(s) => {
                if buf.is_empty() {
                    buf.resize(16 * 1024, 0);
                }
                s.read(buf).await.map(Some)
            }
        }
    }

    /// Read what a plain socket has without waiting (`WouldBlock` for TLS,
    /// which reads in [`Sock::wait_read`]).
    pub fn try_read_plain(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Sock::Plain(s) => s.try_read(buf),
            Sock::Tls(_) => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }
}
