//! DrChrono's paginated lists: how a request picks its page (`page_size`, `cursor`,
//! `verbose`), and the page's shape (`next`, `previous` and the list under
//! [`ListShape`]'s name).

use serde_json::{Map, Value, json};

use crate::config::ListShape;

/// Default and largest page of a list endpoint, as DrChrono documents it. (Its appointments
/// list has 20; the simulator serves no such list.)
const PAGE_SIZE: u64 = 250;

/// Default and largest page with `verbose=true`, which DrChrono caps lower because each item
/// carries more fields.
const VERBOSE_PAGE_SIZE: u64 = 50;

/// What a list request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageRequest {
    /// Items on the page, within DrChrono's cap.
    pub(crate) page_size: u64,
    /// Items before the page.
    pub(crate) cursor: u64,
    /// `verbose=true`: kept in the links, and the lower cap.
    pub(crate) verbose: bool,
}

impl PageRequest {
    /// Reads a list request's query string. `page_size` is read as DRF's
    /// `PageNumberPagination.get_page_size` reads it (`_positive_int(strict=True,
    /// cutoff=max_page_size)`): a positive integer is cut off at the cap, and anything else
    /// (absent, zero, negative, not a number) is the default page size. `verbose` is on for
    /// `true` in any case.
    pub(crate) fn parse(query: Option<&str>) -> Self {
        let query: Vec<(String, String)> =
            serde_urlencoded::from_str(query.unwrap_or("")).unwrap_or_default();
        let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim());
        let verbose = get("verbose").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let (default, max) = if verbose {
            (VERBOSE_PAGE_SIZE, VERBOSE_PAGE_SIZE)
        } else {
            (PAGE_SIZE, PAGE_SIZE)
        };
        let page_size = match get("page_size").and_then(positive_int) {
            Some(size) => size.min(max),
            None => default,
        };
        let cursor = get("cursor").and_then(|v| v.parse().ok()).unwrap_or(0);
        Self {
            page_size,
            cursor,
            verbose,
        }
    }

    /// The absolute link to the page starting after `cursor` items, same size and verbosity.
    pub(crate) fn link(&self, host: &str, path: &str, cursor: u64) -> String {
        let verbose = if self.verbose { "&verbose=true" } else { "" };
        format!(
            "http://{host}{path}?cursor={cursor}&page_size={}{verbose}",
            self.page_size
        )
    }
}

/// A positive integer as Python's `int()` reads one (an optional `+`, digits); one too large
/// for `u64` is `u64::MAX`, as it is over any cap. `None` for zero and anything else.
fn positive_int(text: &str) -> Option<u64> {
    let digits = text.strip_prefix('+').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All digits, so parsing fails only on overflow (leading zeros parse).
    let value = digits.parse::<u64>().unwrap_or(u64::MAX);
    (value > 0).then_some(value)
}

/// A page: `{"next", "previous", <items>}` with the items under `shape`'s name.
pub(crate) fn page(
    shape: ListShape,
    next: Option<String>,
    previous: Option<String>,
    items: Vec<Value>,
) -> Value {
    let mut page = Map::new();
    page.insert("next".to_owned(), json!(next));
    page.insert("previous".to_owned(), json!(previous));
    page.insert(shape.field().to_owned(), Value::Array(items));
    Value::Object(page)
}
