//! A TCP stream that remembers when a byte last moved, for the idle timeout.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Instant,
};

/// The stream, and the clock of its last activity.
pub struct Watched {
    stream: TcpStream,
    activity: Activity,
}

/// When a byte last moved, as milliseconds since the connection opened
/// (one atomic store per read or write that made progress), and how many
/// requests the connection has carried.
#[derive(Clone)]
pub struct Activity {
    opened: Instant,
    shared: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    last_ms: AtomicU64,
    requests: AtomicU64,
}

impl Watched {
    pub fn new(stream: TcpStream) -> (Self, Activity) {
        let activity = Activity { opened: Instant::now(), shared: Arc::default() };
        (Self { stream, activity: activity.clone() }, activity)
    }
}

impl Activity {
    fn touch(&self) {
        self.shared.last_ms.store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Counts a request whose head arrived.
    pub fn request(&self) {
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests whose head arrived on this connection.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Completes once no byte has moved for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let due = self.opened + Duration::from_millis(self.shared.last_ms.load(Ordering::Relaxed)) + idle;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
