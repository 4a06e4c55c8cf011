//! [`UriText`]: a URI kept as its text, for the layers that keep a request's URI in case
//! they need it again.

use std::fmt;

use http::Uri;

/// The longest URI text kept in place: 94 bytes (with its length and the variant's tag,
/// 96), enough for `https://app.drchrono.com/api/…` with an id or a short query. A longer
/// one is kept in one allocation.
const INLINE: usize = 94;

/// A URI's text (scheme, authority, path and query, as they are), parsed again only when
/// the URI is needed: for an error's context (the classifier) or for a retry (the retry
/// loop's copy of a request).
///
/// A clone of the [`Uri`] itself writes the reference counts of its two shared parts, and
/// its drop writes them again: four atomic read-modify-writes and four indirect calls a
/// request, which cost more than this copy. Shared plumbing of the drchrono-tower crates,
/// not part of their documented API.
#[doc(hidden)]
pub struct UriText(Repr);

enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl UriText {
    /// `uri`'s text.
    #[inline]
    pub fn of(uri: &Uri) -> Self {
        let scheme = uri.scheme_str();
        let authority = uri.authority().map_or("", |authority| authority.as_str());
        let path = uri.path_and_query().map_or("", |path| path.as_str());
        // The scheme and `://`.
        let prefix = scheme.map_or(0, |scheme| scheme.len() + 3);
        let len = prefix + authority.len() + path.len();
        match u8::try_from(len) {
            Ok(short) if len <= INLINE => {
                let mut bytes = [0; INLINE];
                match scheme {
                    // DrChrono's: one store of a constant, not a call to `memcpy`.
                    Some("https") => {
                        if let Some((head, _)) = bytes.split_first_chunk_mut::<8>() {
                            *head = *b"https://";
                        }
                    }
                    Some(scheme) => {
                        bytes[..scheme.len()].copy_from_slice(scheme.as_bytes());
                        bytes[scheme.len()..prefix].copy_from_slice(b"://");
                    }
                    None => {}
                }
                let mut at = prefix;
                for part in [authority, path] {
                    bytes[at..at + part.len()].copy_from_slice(part.as_bytes());
                    at += part.len();
                }
                Self(Repr::Inline { len: short, bytes })
            }
            _ => {
                let separator = if scheme.is_some() { "://" } else { "" };
                let parts = [scheme.unwrap_or(""), separator, authority, path];
                Self(Repr::Heap(parts.concat().into_bytes().into_boxed_slice()))
            }
        }
    }

    /// The URI again. Text taken from a [`Uri`] always parses; `None` is only the type's
    /// way of saying so without a panic.
    pub fn to_uri(&self) -> Option<Uri> {
        Uri::try_from(self.as_bytes()).ok()
    }

    fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Heap(bytes) => bytes,
        }
    }
}

impl fmt::Debug for UriText {
    /// The length only: the query may hold patient data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UriText")
            .field("len", &self.as_bytes().len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_uri_comes_back_equal() {
        let long = format!(
            "https://app.drchrono.com/api/patients?q={}",
            "x".repeat(120)
        );
        for text in [
            "https://app.drchrono.com/api/patients/1",
            "http://127.0.0.1:8080/api/appointments?since=2026-01-01",
            "wss+x.y://host.example/a?b",
            "/api/patients?page=2",
            "app.drchrono.com:443",
            "*",
            long.as_str(),
        ] {
            let uri: Uri = text.parse().unwrap();
            assert_eq!(UriText::of(&uri).to_uri(), Some(uri), "{text}");
        }
        let debug = format!("{:?}", UriText::of(&"/api?secret=1".parse().unwrap()));
        assert!(!debug.contains("secret"), "{debug}");
    }
}
