//! A reader that refuses lines longer than a bound: the socket's MCP
//! messages are one JSON-RPC message per line, and rmcp's own line codec
//! would buffer up to 16 MiB of one before looking at it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

pub struct LineLimited<R> {
    inner: R,
    max: usize,
    /// Bytes of the line read so far (since the last newline).
    current: usize,
}

impl<R> LineLimited<R> {
    pub fn new(inner: R, max: usize) -> LineLimited<R> {
        LineLimited {
            inner,
            max,
            current: 0,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for LineLimited<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                for b in &buf.filled()[before..] {
                    if *b == b'\n' {
                        this.current = 0;
                    } else {
                        this.current += 1;
                        if this.current > this.max {
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!(
                                    "a message line over {} bytes (api.max_request_bytes + 64 KiB); the connection is closed",
                                    this.max
                                ),
                            )));
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn long_lines_are_refused_short_ones_pass() {
        let data = b"short\nline\n".to_vec();
        let mut ok = String::new();
        LineLimited::new(&data[..], 8)
            .read_to_string(&mut ok)
            .await
            .unwrap();
        assert_eq!(ok, "short\nline\n");
        let long = [vec![b'x'; 100], b"\n".to_vec()].concat();
        let mut out = Vec::new();
        let e = LineLimited::new(&long[..], 8)
            .read_to_end(&mut out)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
