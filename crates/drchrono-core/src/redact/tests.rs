use super::*;

#[test]
fn payload_json_keeps_keys_and_ids_only() {
    let payload =
        br#"{"doctor": 1, "patient": "22", "first_name": "Jane", "date_of_birth": "1970-01-01",
        "nested": {"office": 3, "notes": ["a", {"x": true}]}, "id": "John"}"#;
    let out = redact_payload(payload);
    assert_eq!(
        out,
        r#"{"date_of_birth":"REDACT","doctor":1,"first_name":"REDACT","id":"REDACT","nested":{"notes":["REDACT",{"x":"REDACT"}],"office":3},"patient":"22"}"#
    );
}

#[test]
fn payload_allowed_key_with_object_recurses() {
    let out = redact_payload(br#"{"patient": {"first_name": "Jane", "id": 5}}"#);
    assert_eq!(out, r#"{"patient":{"first_name":"REDACT","id":5}}"#);
}

#[test]
fn payload_form_encoded() {
    let out = redact_payload(
        b"grant_type=refresh_token&refresh_token=SECRET&client_id=abc&client_secret=XYZ&page=2",
    );
    assert_eq!(
        out,
        "grant_type=refresh_token&refresh_token=REDACT&client_id=REDACT&client_secret=REDACT&page=2"
    );
}

#[test]
fn payload_other_is_described() {
    assert_eq!(redact_payload(b""), "<empty payload>");
    assert_eq!(redact_payload(b"Jane Doe"), "<text payload, 8 bytes>");
    assert_eq!(
        redact_payload(&[0xff, 0xfe]),
        "<non-UTF-8 payload, 2 bytes>"
    );
}

#[test]
fn error_body_keeps_drchrono_messages() {
    let body = br#"{"detail": "Not found.", "first_name": "Jane"}"#;
    assert_eq!(
        redact_error_body(body, None, false, false),
        r#"{"detail":"Not found.","first_name":"REDACT"}"#
    );
    let body =
        br#"{"doctor": ["This field is required."], "nested": {"x": ["bad"]}, "name": "Jane"}"#;
    assert_eq!(
        redact_error_body(body, None, false, true),
        r#"{"doctor":["This field is required."],"name":"REDACT","nested":{"x":["bad"]}}"#
    );
    // Without field lists (not a 400), list strings are redacted.
    assert_eq!(
        redact_error_body(br#"{"names": ["Jane"]}"#, None, false, false),
        r#"{"names":["REDACT"]}"#
    );
}

#[test]
fn error_body_descriptions() {
    assert_eq!(redact_error_body(b"", None, false, false), "<empty body>");
    assert_eq!(
        redact_error_body(b"<html><body>Bad gateway</body></html>", None, false, false),
        "<html body, 37 bytes>"
    );
    assert_eq!(
        redact_error_body(
            b"Bad gateway",
            Some("text/html; charset=utf-8"),
            false,
            false
        ),
        "<html body, 11 bytes>"
    );
    assert_eq!(
        redact_error_body(br#"{"detail": "Jane Do"#, None, true, false),
        "<truncated JSON body, 19 bytes, cut at the read limit>"
    );
    assert_eq!(
        redact_error_body(br#"{"detail" 1}"#, None, false, false),
        "<invalid JSON body, 12 bytes>"
    );
    assert_eq!(
        redact_error_body(&[b'{', 0xc3, 0x28], None, false, false),
        "<non-UTF-8 body, 3 bytes>"
    );
}

#[test]
fn shorten_cuts_on_char_boundaries() {
    assert_eq!(shorten("abc", 3), "abc");
    assert_eq!(shorten("abcd", 3), "ab…");
    assert_eq!(shorten("ééééé", 2), "é…");
    assert_eq!(shorten("", 0), "");
    assert_eq!(shorten("a", 0), "…");
}

#[test]
fn long_snippets_are_short() {
    let body = format!(r#"{{"detail": "{}"}}"#, "x".repeat(5000));
    let snippet = redact_error_body(body.as_bytes(), None, false, false);
    assert_eq!(snippet.chars().count(), MAX_SNIPPET_CHARS);
}

#[test]
fn query_values() {
    assert_eq!(
        redact_query("since=2024-06-11&first_name=Jane&page=2&patient=5&verbose=true&flag"),
        "since=2024-06-11&first_name=REDACT&page=2&patient=5&verbose=true&flag"
    );
    assert_eq!(redact_query("since=Jane%20Doe"), "since=REDACT");
    assert_eq!(redact_query(""), "");
}

#[test]
fn messages_lose_every_quoted_value() {
    let cases = [
        // DRF's ChoiceField, MultipleChoiceField, BooleanField.
        (
            "\"Female - pregnant\" is not a valid choice.",
            "\"REDACT\" is not a valid choice.",
        ),
        // PrimaryKeyRelatedField.
        (
            "Invalid pk \"123\" - object does not exist.",
            "Invalid pk \"REDACT\" - object does not exist.",
        ),
        // Django's date and integer messages (curly quotes; repr's single quotes).
        (
            "“1970-13-01” value has an invalid date format. It must be in YYYY-MM-DD format.",
            "“REDACT” value has an invalid date format. It must be in YYYY-MM-DD format.",
        ),
        (
            "Value 'Jane Doe' is not a valid choice.",
            "Value 'REDACT' is not a valid choice.",
        ),
        ("‘Jane’ is invalid.", "‘REDACT’ is invalid."),
        ("«Jane» is invalid.", "«REDACT» is invalid."),
        // Spans of one kind run from the first mark to the last.
        (
            "unknown variant `Jane`, expected `F`",
            "unknown variant `REDACT`",
        ),
        // A value that contains quotes is covered whole (to the last closing mark).
        (
            "\"Jane \"JJ\" Doe\" is not a valid choice.",
            "\"REDACT\" is not a valid choice.",
        ),
        (
            "'O'Brien' value must be an integer.",
            "'REDACT' value must be an integer.",
        ),
        (
            "\"it's\" is not a valid choice.",
            "\"REDACT\" is not a valid choice.",
        ),
        // Never closed: the rest may be the value.
        ("\"Jane Doe is not a valid choice.", "\"REDACT"),
        // Unquoted echoes, by template.
        (
            "Object with name=Jane Doe does not exist.",
            "Object with name=REDACT does not exist.",
        ),
        (
            "Object with name=Jane \"does not exist.\" does not exist.",
            "Object with name=REDACT does not exist.",
        ),
        (
            "Select a valid choice. Jane Doe is not one of the available choices.",
            "Select a valid choice. REDACT is not one of the available choices.",
        ),
        // Kept: DrChrono's words, limits and lengths, apostrophes, empty quotes, methods.
        (
            "Ensure this value has at most 50 characters (it has 73).",
            "Ensure this value has at most 50 characters (it has 73).",
        ),
        (
            "The patient's date of birth can't be in the future.",
            "The patient's date of birth can't be in the future.",
        ),
        (
            "Date has wrong format. Use one of these formats instead: YYYY-MM-DD.",
            "Date has wrong format. Use one of these formats instead: YYYY-MM-DD.",
        ),
        ("\"\" is not a valid choice.", "\"\" is not a valid choice."),
        (
            "Method \"PATCH\" not allowed.",
            "Method \"PATCH\" not allowed.",
        ),
        ("", ""),
    ];
    for (message, expected) in cases {
        assert_eq!(redact_message(message), expected, "{message}");
    }
}

#[test]
fn error_bodies_keep_messages_without_their_quoted_values() {
    let body = br#"{"gender": ["\"Female - pregnant\" is not a valid choice."],
        "doctor": ["This field is required."],
        "detail": "No Patient matches \"Jane Doe\".",
        "non_field_errors": ["Select a valid choice. Jane is not one of the available choices."]}"#;
    assert_eq!(
        redact_error_body(body, None, false, true),
        r#"{"detail":"No Patient matches \"REDACT\".","doctor":["This field is required."],"gender":["\"REDACT\" is not a valid choice."],"non_field_errors":["Select a valid choice. REDACT is not one of the available choices."]}"#
    );
}
