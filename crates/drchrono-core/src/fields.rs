//! [`FieldErrors`]: the field errors of a DrChrono 400, and how they are shown.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};

use crate::redact::redact_message;

/// The field errors of a DrChrono 400 response: `{"field": ["message", …]}`.
///
/// Keys are field names (never patient values; nested errors are flattened as
/// `"address.zip"`, `"items[1].name"`). Messages are DrChrono's (Django REST Framework's)
/// text, kept as the server sent them so that the caller can act on them; but DRF quotes the
/// submitted value in some of them (`"\"Female - pregnant\" is not a valid choice."`), so
/// every rendering of this crate shows them through
/// [`redact_message`](crate::redact::redact_message): `Debug`, a
/// [`SupportReport`](crate::SupportReport), the error body's snippet. `Display` of the error
/// names the fields only.
///
/// It dereferences to the map (`get`, `keys`, `contains_key`, `insert`, indexing, …).
///
/// ```
/// use drchrono_core::FieldErrors;
///
/// let errors = FieldErrors::from([(
///     "gender".to_owned(),
///     vec!["\"Female - pregnant\" is not a valid choice.".to_owned()],
/// )]);
/// assert_eq!(errors["gender"][0], "\"Female - pregnant\" is not a valid choice.");
/// assert_eq!(
///     format!("{errors:?}"),
///     r#"{"gender": ["\"REDACT\" is not a valid choice."]}"#
/// );
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    /// No field errors.
    pub fn new() -> Self {
        Self::default()
    }

    /// The map of field names to messages, as the server sent them.
    pub fn into_inner(self) -> BTreeMap<String, Vec<String>> {
        self.0
    }

    /// The field errors with every message through
    /// [`redact_message`](crate::redact::redact_message): what a report shows.
    pub fn redacted(&self) -> BTreeMap<String, Vec<String>> {
        self.0
            .iter()
            .map(|(field, messages)| {
                let messages = messages.iter().map(|m| redact_message(m)).collect();
                (field.clone(), messages)
            })
            .collect()
    }
}

impl Deref for FieldErrors {
    type Target = BTreeMap<String, Vec<String>>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for FieldErrors {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl From<BTreeMap<String, Vec<String>>> for FieldErrors {
    fn from(map: BTreeMap<String, Vec<String>>) -> Self {
        Self(map)
    }
}

impl<const N: usize> From<[(String, Vec<String>); N]> for FieldErrors {
    fn from(pairs: [(String, Vec<String>); N]) -> Self {
        Self(BTreeMap::from(pairs))
    }
}

impl FromIterator<(String, Vec<String>)> for FieldErrors {
    fn from_iter<I: IntoIterator<Item = (String, Vec<String>)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl IntoIterator for FieldErrors {
    type Item = (String, Vec<String>);
    type IntoIter = std::collections::btree_map::IntoIter<String, Vec<String>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a FieldErrors {
    type Item = (&'a String, &'a Vec<String>);
    type IntoIter = std::collections::btree_map::Iter<'a, String, Vec<String>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Debug for FieldErrors {
    /// The field names, and each message with its quoted values redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.redacted()).finish()
    }
}
