//! Guards on a request body while it streams, so that no body, however it is shaped or paced,
//! holds a slot or memory beyond what the service documents:
//!
//! - [`MinRate`]: the body must bring at least `bytes_per_sec × window` bytes in every window,
//!   or the request ends with 408 `upload_too_slow` (a client trickling a byte a second would
//!   otherwise keep its `concurrency_limit` slot for the whole request timeout).
//! - [`Framed`]: what the multipart parser buffers besides part data (preamble, part headers,
//!   boundaries) is capped at [`MAX_MULTIPART_FRAMING_BYTES`]. The parser (multer) buffers until
//!   it finds a boundary or the end of a header block, so without this a body with no boundary,
//!   or a part header that never ends, would be held in memory whole.
//!
//! A guard stops a body by yielding a [`BodyRefused`] as the stream's error; [`refusal`] finds it
//! again in whatever error chain the body's reader (multer, axum) wraps it in.

use std::error::Error as StdError;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::BoxError;
use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use super::state::MinBodyRate;

/// Most bytes of a multipart body that are not part data, and so sit in the parser's buffer.
pub(crate) const MAX_MULTIPART_FRAMING_BYTES: u64 = 1024 * 1024;

/// Largest piece of body handed to the multipart parser at once.
const PIECE_BYTES: usize = 64 * 1024;

/// Why a guard stopped a request body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyRefused {
    /// Fewer bytes than the minimum rate asks for arrived within one window.
    #[error(
        "the request body arrived slower than {} bytes per second over {} s",
        .0.bytes_per_sec,
        .0.window.as_secs()
    )]
    TooSlow(MinBodyRate),
    /// The multipart framing outgrew its budget.
    #[error(
        "more than {MAX_MULTIPART_FRAMING_BYTES} bytes of multipart framing (preamble, part headers, boundaries)"
    )]
    MultipartFraming,
}

/// The guard's refusal somewhere in an error's source chain, if a guard stopped the body.
pub(crate) fn refusal<'e>(e: &'e (dyn StdError + 'static)) -> Option<&'e BodyRefused> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(refused) = c.downcast_ref::<BodyRefused>() {
            return Some(refused);
        }
        cause = c.source();
    }
    None
}

/// A body stream that fails with [`BodyRefused::TooSlow`] when a window of
/// [`MinBodyRate::window`] brings fewer than [`MinBodyRate::bytes_per_window`] bytes. The
/// windows follow each other from the moment the handler starts reading the body; a stalled
/// client is therefore cut off one window after its last byte at the latest, even though no
/// chunk arrives to notice it (the timer does).
pub(crate) struct MinRate<S> {
    inner: S,
    rate: MinBodyRate,
    received: u64,
    window_end: Instant,
    timer: Pin<Box<Sleep>>,
    done: bool,
}

impl<S> MinRate<S> {
    pub(crate) fn new(inner: S, rate: MinBodyRate) -> Self {
        let window_end = Instant::now() + rate.window;
        Self {
            inner,
            rate,
            received: 0,
            window_end,
            timer: Box::pin(tokio::time::sleep_until(window_end)),
            done: false,
        }
    }

    /// At the end of a window: too few bytes is the refusal, else the next window starts.
    fn end_window(&mut self, now: Instant) -> Result<(), BodyRefused> {
        if self.received < self.rate.bytes_per_window() {
            self.done = true;
            return Err(BodyRefused::TooSlow(self.rate));
        }
        self.received = 0;
        self.window_end = now + self.rate.window;
        self.timer.as_mut().reset(self.window_end);
        Ok(())
    }
}

impl<S, E> Stream for MinRate<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<BoxError>,
{
    type Item = Result<Bytes, BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.received += chunk.len() as u64;
                let now = Instant::now();
                if now >= this.window_end
                    && let Err(refused) = this.end_window(now)
                {
                    return Poll::Ready(Some(Err(refused.into())));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                // No chunk yet: the window's timer decides, and is registered for this task.
                if this.timer.as_mut().poll(cx).is_ready() {
                    let now = Instant::now().max(this.window_end);
                    if let Err(refused) = this.end_window(now) {
                        return Poll::Ready(Some(Err(refused.into())));
                    }
                    // The timer now points at the end of the new window; register it.
                    let _ = this.timer.as_mut().poll(cx);
                }
                Poll::Pending
            }
        }
    }
}

/// Counts, for one multipart body, the bytes given to the parser and the part bytes the handler
/// received from it; the difference is what the parser holds or consumed as framing.
#[derive(Debug, Clone, Default)]
pub(crate) struct FramingBudget(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    fed: AtomicU64,
    delivered: AtomicU64,
}

impl FramingBudget {
    /// Records part bytes the handler received.
    pub(crate) fn delivered(&self, bytes: usize) {
        self.0.delivered.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// The body as the multipart parser sees it: pieces of at most [`PIECE_BYTES`], one per poll
/// (the parser keeps pulling while the stream is ready, so a piece at a time is what bounds its
/// buffer), failing with [`BodyRefused::MultipartFraming`] once the parser holds or consumed
/// more than [`MAX_MULTIPART_FRAMING_BYTES`] that were not handed on as part data.
pub(crate) struct Framed<S> {
    inner: S,
    budget: FramingBudget,
    pending: Bytes,
    yield_next: bool,
    done: bool,
}

impl<S> Framed<S> {
    pub(crate) fn new(inner: S, budget: FramingBudget) -> Self {
        Self { inner, budget, pending: Bytes::new(), yield_next: false, done: false }
    }
}

impl<S, E> Stream for Framed<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<BoxError>,
{
    type Item = Result<Bytes, BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.yield_next {
            // Ends the parser's read loop after one piece; it is polled again right away.
            this.yield_next = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if this.pending.is_empty() {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.pending = chunk,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        let piece = this.pending.split_to(this.pending.len().min(PIECE_BYTES));
        let counts = &this.budget.0;
        let fed = counts.fed.fetch_add(piece.len() as u64, Ordering::Relaxed) + piece.len() as u64;
        if fed.saturating_sub(counts.delivered.load(Ordering::Relaxed)) > MAX_MULTIPART_FRAMING_BYTES {
            this.done = true;
            return Poll::Ready(Some(Err(BodyRefused::MultipartFraming.into())));
        }
        this.yield_next = true;
        Poll::Ready(Some(Ok(piece)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt as _;

    use super::*;

    fn chunks(sizes: &[usize]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures_util::stream::iter(sizes.iter().map(|n| Ok(Bytes::from(vec![b'x'; *n]))).collect::<Vec<_>>())
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_refused_when_its_window_ends() {
        let rate = MinBodyRate { bytes_per_sec: 10, window: Duration::from_secs(2) };
        let stalled = chunks(&[5]).chain(futures_util::stream::pending());
        let mut body = MinRate::new(stalled, rate);
        assert_eq!(body.next().await.expect("a chunk").expect("ok").len(), 5);
        let started = Instant::now();
        let e = body.next().await.expect("an item").expect_err("refused");
        assert!(matches!(refusal(e.as_ref()), Some(BodyRefused::TooSlow(r)) if *r == rate), "{e}");
        assert_eq!(started.elapsed(), Duration::from_secs(2), "at the end of the first window");
        assert!(body.next().await.is_none(), "nothing after the refusal");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_at_the_minimum_rate_passes_window_after_window() {
        let rate = MinBodyRate { bytes_per_sec: 10, window: Duration::from_secs(1) };
        // 10 bytes every 900 ms: each window sees at least 10 bytes.
        let paced = futures_util::stream::unfold(0, |i| async move {
            (i < 6).then_some(())?;
            tokio::time::sleep(Duration::from_millis(900)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"0123456789")), i + 1))
        });
        let body = MinRate::new(Box::pin(paced), rate);
        let received: Vec<_> = body.collect().await;
        assert_eq!(received.len(), 6);
        assert!(received.iter().all(Result::is_ok));
    }

    #[tokio::test]
    async fn the_parser_gets_one_bounded_piece_per_poll_and_framing_is_capped() {
        let budget = FramingBudget::default();
        let mut framed = Framed::new(chunks(&[200 * 1024]), budget.clone());
        let first = framed.next().await.expect("a piece").expect("ok");
        assert_eq!(first.len(), PIECE_BYTES);
        budget.delivered(first.len());
        let mut total = first.len();
        while let Some(piece) = framed.next().await {
            let piece = piece.expect("delivered data never counts as framing");
            budget.delivered(piece.len());
            total += piece.len();
        }
        assert_eq!(total, 200 * 1024);

        // Nothing handed on as part data: the budget runs out after 1 MiB (+ one piece).
        let mut undelivered = Framed::new(chunks(&[4 << 20]), FramingBudget::default());
        let mut fed = 0;
        let e = loop {
            match undelivered.next().await.expect("an item") {
                Ok(piece) => fed += piece.len() as u64,
                Err(e) => break e,
            }
        };
        assert!(matches!(refusal(e.as_ref()), Some(BodyRefused::MultipartFraming)), "{e}");
        assert!(fed <= MAX_MULTIPART_FRAMING_BYTES, "{fed}");
    }
}
