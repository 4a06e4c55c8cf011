//! [`RetryFuture`]: the wait before the next attempt.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

pin_project! {
    /// The wait before the next attempt, returned by the policy's `retry`: resolves at once
    /// (a 401 replay) or at an instant of tokio's clock (a backoff delay, or the moment a
    /// 429 clears).
    #[derive(Debug)]
    pub struct RetryFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State {
        Now,
        Until {
            #[pin]
            sleep: Sleep,
        },
    }
}

impl RetryFuture {
    pub(crate) fn now() -> Self {
        Self { state: State::Now }
    }

    pub(crate) fn until(deadline: Instant) -> Self {
        Self {
            state: State::Until {
                sleep: tokio::time::sleep_until(deadline),
            },
        }
    }
}

impl Future for RetryFuture {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.project().state.project() {
            StateProj::Now => Poll::Ready(()),
            StateProj::Until { sleep } => sleep.poll(cx),
        }
    }
}
