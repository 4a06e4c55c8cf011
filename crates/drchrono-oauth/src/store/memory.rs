//! [`MemoryTokenStore`]: tokens that live as long as the process.

use std::fmt;
use std::sync::Mutex;

use futures::future::{self, BoxFuture};

use super::{StoreError, TokenStore, check_generation};
use crate::TokenSet;

/// A [`TokenStore`] in memory: nothing survives a restart.
///
/// The default store of [`TokenManager`](crate::TokenManager). Use a durable store
/// ([`FileTokenStore`](crate::FileTokenStore)) in production: DrChrono rotates the refresh
/// token on every refresh, so a refresh token kept only in memory is lost on restart.
#[derive(Default)]
pub struct MemoryTokenStore {
    slot: Mutex<Option<TokenSet>>,
}

impl MemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that already holds `tokens`.
    pub fn with_tokens(tokens: TokenSet) -> Self {
        Self {
            slot: Mutex::new(Some(tokens)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<TokenSet>> {
        // A poisoned lock still holds a whole `TokenSet` (assignments cannot tear).
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl fmt::Debug for MemoryTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTokenStore")
            .field("generation", &self.lock().as_ref().map(|t| t.generation))
            .finish()
    }
}

impl TokenStore for MemoryTokenStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<TokenSet>, StoreError>> {
        let loaded = self.lock().clone();
        Box::pin(future::ready(Ok(loaded)))
    }

    fn save<'a>(
        &'a self,
        expected_generation: u64,
        tokens: &'a TokenSet,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut slot = self.lock();
        let result = check_generation(slot.as_ref(), expected_generation).map(|()| {
            *slot = Some(tokens.clone());
        });
        Box::pin(future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn pair(generation: u64) -> TokenSet {
        TokenSet::new("a", "r", UNIX_EPOCH).with_generation(generation)
    }

    #[tokio::test]
    async fn compare_and_swap_on_generation() {
        let store = MemoryTokenStore::new();
        assert!(store.load().await.unwrap().is_none());
        store.save(0, &pair(1)).await.unwrap();
        assert_eq!(store.load().await.unwrap().unwrap().generation, 1);

        let err = store.save(0, &pair(2)).await.unwrap_err();
        assert_eq!(err.conflict_generation(), Some(1));
        match err {
            StoreError::Conflict { expected, current } => {
                assert_eq!(expected, 0);
                assert_eq!(current.unwrap().generation, 1);
            }
            other => panic!("unexpected {other:?}"),
        }
        store.save(1, &pair(2)).await.unwrap();
        assert_eq!(store.load().await.unwrap().unwrap().generation, 2);
    }

    #[tokio::test]
    async fn conflict_on_empty_store_reports_generation_zero() {
        let store = MemoryTokenStore::new();
        let err = store.save(3, &pair(4)).await.unwrap_err();
        assert_eq!(err.conflict_generation(), Some(0));
        assert!(err.to_string().contains("expected generation 3, found 0"));
    }
}
