//! Redaction of payloads and error bodies: keys stay, patient values become `REDACT`.
//!
//! DrChrono asks that payloads in support reports be redacted like `"Field": REDACT`. The
//! functions here apply that rule to JSON (nested objects and arrays included) and to
//! `application/x-www-form-urlencoded` payloads; anything else is replaced by a short
//! description such as `<html body, 532 bytes>` that carries no content at all.
//!
//! Only the values of an allow-list of keys (ids and paging such as `id`, `doctor`,
//! `patient`, `page`: never patient data) survive, and only when they are numbers, booleans
//! or digit strings; a few code keys (`grant_type`, `scope`, `token_type`) keep short
//! lower-case codes. Error bodies additionally keep DrChrono's own messages
//! (`detail`, `error`, `error_description`, `non_field_errors`, `message`, and for a 400 the
//! field-error lists), through [`redact_message`].
//!
//! # Messages that echo a value
//!
//! DrChrono's messages are its own text, but Django REST Framework's validation messages
//! quote what was submitted: `"\"Female - pregnant\" is not a valid choice."`,
//! `Invalid pk "123" - object does not exist.`, Django's `“1970-13-01” value has an invalid
//! date format.` Every message is therefore rendered through [`redact_message`], whose rule
//! is:
//!
//! 1. every quoted span is replaced by `REDACT`: `"…"`, `'…'`, `“…”`, `‘…’`, `«…»` and
//!    `` `…` ``, from an opening mark to the **last** closing mark of its kind (so a value
//!    that itself contains quotes is covered whole), and to the end of the message when it is
//!    never closed. A `'` or `‘` opens only where a word does not continue (`patient's` is
//!    an apostrophe), and a `'` or `’` closes only where a word does not continue. The one
//!    span kept is a standard HTTP method name (DRF's `Method "PATCH" not allowed.`);
//! 2. the templates that echo a value without quotes are redacted by pattern: DRF's
//!    `Object with {field}={value} does not exist.` and Django's
//!    `Select a valid choice. {value} is not one of the available choices.`;
//! 3. everything else is kept, numbers included: `Ensure this value has at most 50
//!    characters (it has 73).` keeps its limit and length.
//!
//! A template that echoed a value without quotes and is not listed in rule 2 would not be
//! caught; DRF's and Django's built-in messages quote every value they echo.
//!
//! ```
//! use drchrono_core::redact::redact_payload;
//!
//! let payload = br#"{"patient": 42, "first_name": "Jane", "notes": ["allergic"]}"#;
//! assert_eq!(
//!     redact_payload(payload),
//!     r#"{"first_name":"REDACT","notes":["REDACT"],"patient":42}"#
//! );
//! ```

use serde_json::{Map, Value};

/// The replacement for every redacted value.
pub const REDACTED: &str = "REDACT";

/// Keys whose numeric, boolean or digit-string values are kept: ids and paging, not patient
/// data.
pub(crate) const ALLOWED_KEYS: &[&str] = &[
    "id",
    "doctor",
    "patient",
    "office",
    "exam_room",
    "appointment",
    "appointment_profile",
    "profile",
    "duration",
    "page",
    "page_size",
    "practice_group",
    "clinical_note_template",
    "template",
    "line_item",
    "user",
];

/// Keys whose values are kept when they are short codes of `[a-z0-9_:. -]`
/// (`grant_type=refresh_token`, `scope=calendar:read`). Never a secret: `refresh_token`,
/// `client_secret`, `code` and `access_token` are not listed, so they are always redacted.
pub(crate) const CODE_KEYS: &[&str] = &["grant_type", "scope", "token_type"];

/// Query parameters whose values are kept in a report's URL when they are short dates, flags
/// or cursors (`[A-Za-z0-9:._+-]`, at most 64 characters), besides [`ALLOWED_KEYS`] ids.
pub(crate) const QUERY_KEYS: &[&str] =
    &["since", "verbose", "cursor", "date", "date_range", "format"];

/// Keys whose string values in an error body are DrChrono's own messages and are kept.
pub(crate) const MESSAGE_KEYS: &[&str] = &[
    "detail",
    "error",
    "error_description",
    "non_field_errors",
    "message",
];

/// Most characters of a snippet or payload kept in an [`crate::ErrorContext`]; longer text is
/// cut (on a character boundary) and ends with `…`. Default and only value: 512.
pub(crate) const MAX_SNIPPET_CHARS: usize = 512;

/// Most characters of a redacted request payload: 4096.
pub(crate) const MAX_PAYLOAD_CHARS: usize = 4096;

#[derive(Clone, Copy)]
enum Mode {
    /// A request payload: only allow-listed values survive.
    Payload,
    /// An error body: DrChrono's messages survive too; `field_lists` keeps strings inside
    /// arrays (DRF field errors of a 400).
    ErrorBody { field_lists: bool },
}

/// `true` when `key` is one of [`ALLOWED_KEYS`].
pub(crate) fn is_allowed_key(key: &str) -> bool {
    ALLOWED_KEYS.contains(&key)
}

/// Redacts a JSON value as a request payload: keys kept, every value `REDACT` except
/// allow-listed ids.
pub fn redact_json(value: &Value) -> Value {
    redact_value(value, None, false, Mode::Payload)
}

/// Redacts a request payload for a report: JSON and form-encoded payloads keep their keys;
/// anything else becomes a description such as `<binary payload, 12 bytes>`.
pub fn redact_payload(bytes: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        let redacted = serde_json::to_string(&redact_json(&value)).unwrap_or_default();
        return shorten(&redacted, MAX_PAYLOAD_CHARS);
    }
    if let Some(form) = std::str::from_utf8(bytes).ok().and_then(redact_form) {
        return shorten(&form, MAX_PAYLOAD_CHARS);
    }
    describe(bytes, None, false, "payload")
}

/// Redacts an error response body into the short snippet kept in
/// [`crate::ErrorContext::body_snippet`].
///
/// JSON keeps keys, allow-listed ids and DrChrono's messages (and, when `field_lists` is set —
/// a 400 — the field-error lists); HTML, empty, non-UTF-8, truncated or other bodies become a
/// description (`<html body, 532 bytes>`). `truncated` says the body was cut at the read
/// limit. The result is at most [`MAX_SNIPPET_CHARS`] characters. (`classify_response`
/// parses the body once and calls [`error_snippet`].)
#[cfg(test)]
pub(crate) fn redact_error_body(
    body: &[u8],
    content_type: Option<&str>,
    truncated: bool,
    field_lists: bool,
) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => error_snippet(&value, field_lists),
        Err(_) => describe(body, content_type, truncated, "body"),
    }
}

/// [`redact_error_body`] of an already parsed JSON body.
pub(crate) fn error_snippet(value: &Value, field_lists: bool) -> String {
    let redacted = redact_value(value, None, false, Mode::ErrorBody { field_lists });
    let text = serde_json::to_string(&redacted).unwrap_or_default();
    shorten(&text, MAX_SNIPPET_CHARS)
}

/// A content-free description of a body: `<empty body>`, `<html body, N bytes>`,
/// `<non-UTF-8 body, N bytes>`, `<truncated JSON body, N bytes>`, `<invalid JSON body, N
/// bytes>` or `<text body, N bytes>`; `what` names the thing (`"body"`, `"payload"`).
/// `truncated` adds `, cut at the read limit`.
pub(crate) fn describe(
    bytes: &[u8],
    content_type: Option<&str>,
    truncated: bool,
    what: &str,
) -> String {
    let len = bytes.len();
    let cut = if truncated {
        ", cut at the read limit"
    } else {
        ""
    };
    if bytes.is_empty() {
        return format!("<empty {what}{cut}>");
    }
    let kind = match std::str::from_utf8(bytes) {
        Err(_) => "non-UTF-8",
        Ok(text) => {
            let trimmed = text.trim_start();
            let html_type = content_type.is_some_and(|t| t.to_ascii_lowercase().contains("html"));
            if html_type || trimmed.starts_with('<') {
                "html"
            } else if trimmed.starts_with('{') || trimmed.starts_with('[') {
                match serde_json::from_str::<Value>(text) {
                    Err(e) if e.is_eof() => "truncated JSON",
                    _ => "invalid JSON",
                }
            } else {
                "text"
            }
        }
    };
    format!("<{kind} {what}, {len} bytes{cut}>")
}

/// Cuts `text` to at most `max` characters (on a character boundary), ending with `…` when
/// cut.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some(_) => {
            let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
            out.push('…');
            out
        }
    }
}

fn redact_value(value: &Value, key: Option<&str>, in_list: bool, mode: Mode) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), redact_value(v, Some(k), false, mode)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| redact_value(item, key, true, mode))
                .collect(),
        ),
        Value::String(text) => match keep_string(text, key, in_list, mode) {
            Keep::Verbatim => value.clone(),
            Keep::Message => Value::String(redact_message(text)),
            Keep::Nothing => Value::String(REDACTED.to_owned()),
        },
        Value::Number(_) | Value::Bool(_) | Value::Null if key.is_some_and(is_allowed_key) => {
            value.clone()
        }
        _ => Value::String(REDACTED.to_owned()),
    }
}

/// What survives of a string value.
enum Keep {
    /// An id or a code.
    Verbatim,
    /// One of DrChrono's messages, through [`redact_message`].
    Message,
    /// Nothing: `REDACT`.
    Nothing,
}

fn keep_string(text: &str, key: Option<&str>, in_list: bool, mode: Mode) -> Keep {
    let Some(key) = key else {
        return if matches!(mode, Mode::ErrorBody { field_lists: true }) && in_list {
            Keep::Message
        } else {
            Keep::Nothing
        };
    };
    if is_allowed_key(key) && is_digits(text) {
        return Keep::Verbatim;
    }
    if CODE_KEYS.contains(&key) && is_code(text) {
        return Keep::Verbatim;
    }
    match mode {
        Mode::ErrorBody { field_lists }
            if MESSAGE_KEYS.contains(&key) || (field_lists && in_list) =>
        {
            Keep::Message
        }
        _ => Keep::Nothing,
    }
}

/// The quotation marks [`redact_message`] empties: (opening, closing).
const QUOTES: &[(char, char)] = &[
    ('"', '"'),
    ('\'', '\''),
    ('“', '”'),
    ('‘', '’'),
    ('«', '»'),
    ('`', '`'),
];

/// The quoted spans [`redact_message`] keeps: HTTP method names (DRF's
/// `Method "PATCH" not allowed.`).
const KEPT_QUOTED: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

/// Templates that echo the submitted value without quotes: (prefix of the message, text
/// after the value). The value is what lies between the prefix's first `separator` and the
/// last occurrence of the suffix.
const UNQUOTED_ECHOES: &[(&str, &str, &str)] = &[
    // DRF's SlugRelatedField: `Object with {slug_name}={value} does not exist.`
    ("Object with ", "=", " does not exist."),
    // Django's ChoiceField: `Select a valid choice. {value} is not one of the available
    // choices.`
    (
        "Select a valid choice.",
        " ",
        " is not one of the available choices.",
    ),
];

/// One of DrChrono's messages with every value it may echo replaced by `REDACT`: quoted spans
/// and DRF's and Django's unquoted echoes (see the [module docs](self) for the rule).
///
/// Never panics; the result is never longer than the message plus a few `REDACT`s.
///
/// ```
/// use drchrono_core::redact::redact_message;
///
/// assert_eq!(
///     redact_message("\"Female - pregnant\" is not a valid choice."),
///     "\"REDACT\" is not a valid choice."
/// );
/// assert_eq!(
///     redact_message("Invalid pk \"123\" - object does not exist."),
///     "Invalid pk \"REDACT\" - object does not exist."
/// );
/// assert_eq!(
///     redact_message("Object with name=Jane Doe does not exist."),
///     "Object with name=REDACT does not exist."
/// );
/// // Limits and lengths stay; DrChrono's own words stay.
/// assert_eq!(
///     redact_message("Ensure this value has at most 50 characters (it has 73)."),
///     "Ensure this value has at most 50 characters (it has 73)."
/// );
/// assert_eq!(redact_message("Method \"PATCH\" not allowed."), "Method \"PATCH\" not allowed.");
/// ```
pub fn redact_message(message: &str) -> String {
    redact_quoted(&redact_unquoted_echo(message))
}

/// Rule 2 of [`redact_message`].
fn redact_unquoted_echo(message: &str) -> String {
    for (prefix, separator, suffix) in UNQUOTED_ECHOES {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        let Some((before, value_and_rest)) = rest.split_once(separator) else {
            continue;
        };
        let tail = match value_and_rest.rfind(suffix) {
            Some(at) => value_and_rest.get(at..).unwrap_or_default(),
            None => "",
        };
        return format!("{prefix}{before}{separator}{REDACTED}{tail}");
    }
    message.to_owned()
}

/// Rule 1 of [`redact_message`].
fn redact_quoted(text: &str) -> String {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let is_word = |index: Option<usize>| {
        index
            .and_then(|i| chars.get(i))
            .is_some_and(|&(_, c)| c.is_alphanumeric())
    };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(&(_, c)) = chars.get(i) {
        let Some(&(_, close)) = QUOTES.iter().find(|(open, _)| *open == c) else {
            out.push(c);
            i += 1;
            continue;
        };
        let apostrophe_like = matches!(c, '\'' | '‘');
        if apostrophe_like && is_word(i.checked_sub(1)) {
            // `patient's`: not a quotation.
            out.push(c);
            i += 1;
            continue;
        }
        let closes = |j: usize| {
            chars.get(j).is_some_and(|&(_, d)| d == close)
                && !(matches!(close, '\'' | '’') && is_word(Some(j + 1)))
        };
        out.push(c);
        match (i + 1..chars.len()).rev().find(|&j| closes(j)) {
            Some(end) => {
                let start = chars.get(i + 1).map_or(text.len(), |&(at, _)| at);
                let stop = chars.get(end).map_or(text.len(), |&(at, _)| at);
                let inner = text.get(start..stop).unwrap_or_default();
                if !inner.is_empty() {
                    out.push_str(if KEPT_QUOTED.contains(&inner) {
                        inner
                    } else {
                        REDACTED
                    });
                }
                out.push(close);
                i = end + 1;
            }
            None => {
                // Never closed: the rest may be the value.
                out.push_str(REDACTED);
                break;
            }
        }
    }
    out
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit())
}

fn is_code(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'_' | b':' | b'.' | b'-' | b' ' | b'+')
        })
}

/// Redacts the values of a query string (`first_name=Jane&since=2024-06-11` →
/// `first_name=REDACT&since=2024-06-11`), keeping the allow-listed ids, codes, dates and
/// flags (`since`, `verbose`, `cursor`, `date`, `date_range`, `format`); a parameter without
/// `=` is kept as a bare key.
pub fn redact_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let Some((key, value)) = pair.split_once('=') else {
            out.push_str(pair);
            continue;
        };
        let keep = (is_allowed_key(key) && is_digits(value))
            || (CODE_KEYS.contains(&key) && is_code(value))
            || (QUERY_KEYS.contains(&key)
                && value.len() <= 64
                && value.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'+' | b'-')
                }));
        out.push_str(key);
        out.push('=');
        out.push_str(if keep { value } else { REDACTED });
    }
    out
}

/// Redacts `a=1&b=2` form payloads; `None` when `text` does not look like one.
fn redact_form(text: &str) -> Option<String> {
    if text.is_empty()
        || text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '{' | '[' | '<' | '"'))
    {
        return None;
    }
    let mut out = String::with_capacity(text.len().min(MAX_PAYLOAD_CHARS));
    for (i, pair) in text.split('&').enumerate() {
        let (key, value) = pair.split_once('=')?;
        if key.is_empty() {
            return None;
        }
        if i > 0 {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        let decoded = value.replace('+', " ");
        let keep = (is_allowed_key(key) && is_digits(value))
            || (CODE_KEYS.contains(&key) && !value.contains('%') && is_code(&decoded));
        out.push_str(if keep { value } else { REDACTED });
    }
    Some(out)
}

#[cfg(test)]
mod tests;
