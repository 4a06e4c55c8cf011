//! [`ReplayBody`]: request bodies that can be sent again.

use std::borrow::Cow;

use bytes::Bytes;
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{Empty, Full};

/// A request body that can be copied before it is sent, so that the request can be retried.
///
/// [`RetryPolicy`](crate::RetryPolicy) retries an `http::Request<B>` only when
/// `B: ReplayBody` and [`ReplayBody::try_clone`] returns `Some`. A body that returns `None`
/// (a stream, [`BoxBody`], [`UnsyncBoxBody`]) is **sent once and never retried**: it cannot
/// be read twice, and buffering it behind the caller's back would hide unbounded memory use.
/// Buffer such a body into [`Full<Bytes>`] yourself when it must be retried.
///
/// Implemented for [`Full`] and [`Empty`] (any data type), [`Bytes`], [`String`],
/// `Vec<u8>`, `&'static str`, `&'static [u8]`, `Cow<'static, str>`, `()`, and `Option<B>`
/// of any of them.
///
/// ```
/// use bytes::Bytes;
/// use drchrono_retry::ReplayBody;
/// use http_body_util::{BodyExt, Full};
///
/// let body = Full::new(Bytes::from_static(b"{\"doctor\": 1}"));
/// assert!(body.try_clone().is_some());
/// assert!(body.boxed().try_clone().is_none());
/// ```
pub trait ReplayBody: Sized {
    /// A copy of the body that will produce the same bytes, or `None` when it cannot be
    /// copied (the request is then sent once, with no retry).
    fn try_clone(&self) -> Option<Self>;
}

impl<D: Clone> ReplayBody for Full<D> {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> ReplayBody for Empty<D> {
    fn try_clone(&self) -> Option<Self> {
        Some(Empty::new())
    }
}

impl<D, E> ReplayBody for BoxBody<D, E> {
    /// Always `None`: a boxed body is a stream that can be read once.
    fn try_clone(&self) -> Option<Self> {
        None
    }
}

impl<D, E> ReplayBody for UnsyncBoxBody<D, E> {
    /// Always `None`: a boxed body is a stream that can be read once.
    fn try_clone(&self) -> Option<Self> {
        None
    }
}

impl<B: ReplayBody> ReplayBody for Option<B> {
    fn try_clone(&self) -> Option<Self> {
        match self {
            Some(body) => body.try_clone().map(Some),
            None => Some(None),
        }
    }
}

macro_rules! replay_by_clone {
    ($($ty:ty),* $(,)?) => {
        $(
            impl ReplayBody for $ty {
                fn try_clone(&self) -> Option<Self> {
                    Some(self.clone())
                }
            }
        )*
    };
}

replay_by_clone!(
    Bytes,
    String,
    Vec<u8>,
    &'static str,
    &'static [u8],
    Cow<'static, str>,
    ()
);

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn clones_produce_the_same_bytes() {
        let full = Full::new(Bytes::from_static(b"payload"));
        let copy = full.try_clone().unwrap();
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "payload");
        assert_eq!(full.collect().await.unwrap().to_bytes(), "payload");

        let empty = Empty::<Bytes>::new().try_clone().unwrap();
        assert!(empty.collect().await.unwrap().to_bytes().is_empty());

        assert_eq!(String::from("x").try_clone().as_deref(), Some("x"));
        assert_eq!(
            Some(Bytes::from_static(b"y")).try_clone(),
            Some(Some("y".into()))
        );
        assert_eq!(None::<Bytes>.try_clone(), Some(None));
    }

    #[test]
    fn streams_are_not_replayed() {
        let boxed = Full::new(Bytes::new()).boxed();
        assert!(boxed.try_clone().is_none());
        let unsync = Full::new(Bytes::new()).boxed_unsync();
        assert!(unsync.try_clone().is_none());
        assert!(Some(Full::new(Bytes::new()).boxed()).try_clone().is_none());
    }
}
