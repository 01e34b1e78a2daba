//! Request bodies under the listener's limits: a body wrapped by the accept loop fails with
//! `BodyTimeout` once its deadline passes, and `read_body` reads one within a size, as 413, 408
//! or 400. Below `http` (which wraps) and the APIs (which read), so both point here.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Limited};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// A request body that fails with `BodyTimeout` once its deadline passes.
pub(crate) struct BodyDeadline {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
}

impl BodyDeadline {
    pub(crate) fn new(inner: Body, within: Duration) -> Self {
        BodyDeadline {
            inner,
            deadline: Box::pin(tokio::time::sleep(within)),
        }
    }
}

/// The error a request body gives when it did not arrive within the listener's body deadline
/// (`http::ConnLimits::body_timeout`).
#[derive(Debug)]
pub struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyTimeout {}

impl http_body::Body for BodyDeadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Why a request body was not read.
#[derive(Debug)]
pub struct BodyError {
    pub status: StatusCode,
    pub message: String,
}

/// Reads a request body of at most `max` bytes, within the listener's body deadline: 413
/// past the size (by its declared length before reading anything), 408 past the deadline.
pub async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let err = |status, message: String| BodyError { status, message };
    let too_large = || {
        err(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {max} bytes"),
        )
    };
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) if e.is::<BodyTimeout>() || source_is::<BodyTimeout>(&*e) => Err(err(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time".into(),
        )),
        Err(e) => Err(err(
            StatusCode::BAD_REQUEST,
            format!("the request body could not be read: {e}"),
        )),
    }
}

/// Whether `e` or an error it wraps is a `T` (axum wraps a body's errors once more).
fn source_is<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.is::<T>() {
            return true;
        }
        cur = e.source();
    }
    false
}
