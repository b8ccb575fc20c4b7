//! What the API accepts, checked the way its OpenAPI document says: ids,
//! bounded text, RFC 3339 times and JSON bodies. Each check here has a
//! twin constraint in `openapi.json` (the document's tests keep them
//! together), so a request the document calls valid is never refused.

use axum::{
    Json,
    extract::{
        Path, Query,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{HeaderMap, header},
};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use super::error::{ApiError, ApiResult, unsupported_media_type};

/// Most characters in a `by` or `created_by` name, a label value, a rule
/// or role name.
pub const NAME_MAX: usize = 200;
/// Most characters in a note or a runbook step's text.
pub const TEXT_MAX: usize = 10_000;
/// Most characters in a silence's comment.
pub const COMMENT_MAX: usize = 2_000;

/// A positive id in canonical decimal (`7`, never `07`, `+7` or `0`).
pub fn id(raw: Result<Path<String>, PathRejection>, what: &str) -> ApiResult<i64> {
    let Path(raw) = raw.map_err(|e| ApiError::bad(e.body_text()))?;
    let canonical =
        raw.bytes().next().is_some_and(|b| (b'1'..=b'9').contains(&b)) && raw.bytes().all(|b| b.is_ascii_digit());
    match raw.parse::<i64>() {
        Ok(n) if canonical => Ok(n),
        _ => Err(ApiError::bad(format!("{what} id must be a whole number from 1 to {}, not {raw:?}", i64::MAX))),
    }
}

/// A count within `range`, in canonical decimal.
pub fn count(raw: &str, field: &str, range: std::ops::RangeInclusive<i64>) -> ApiResult<i64> {
    let canonical = raw == "0"
        || (raw.bytes().next().is_some_and(|b| (b'1'..=b'9').contains(&b)) && raw.bytes().all(|b| b.is_ascii_digit()));
    match raw.parse::<i64>() {
        Ok(n) if canonical && range.contains(&n) => Ok(n),
        _ => Err(ApiError::bad(format!("{field} must be a whole number from {} to {}", range.start(), range.end()))),
    }
}

/// Text a person wrote: 1 to `max` characters, not only blanks (space, tab,
/// CR, LF), no NUL (PostgreSQL cannot store it).
pub fn text(value: &str, field: &str, max: usize) -> ApiResult<()> {
    let blank = value.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\0'));
    if blank || value.contains('\0') || value.chars().count() > max {
        return Err(ApiError::bad(format!("`{field}` must be 1 to {max} characters, not only blanks, without NUL")));
    }
    Ok(())
}

/// A label value: up to [`NAME_MAX`] characters, no NUL; may be empty.
pub fn value(value: &str, field: &str) -> ApiResult<()> {
    if value.contains('\0') || value.chars().count() > NAME_MAX {
        return Err(ApiError::bad(format!("`{field}` must be at most {NAME_MAX} characters, without NUL")));
    }
    Ok(())
}

/// A Prometheus label name, up to 100 characters.
pub fn label_name(name: &str) -> ApiResult<()> {
    let mut bytes = name.bytes();
    let first = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first || name.len() > 100 || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(ApiError::bad(format!(
            "matcher label {name:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, at most 100)"
        )));
    }
    Ok(())
}

/// An RFC 3339 date-time (`2026-03-29T01:30:00Z`, any offset).
pub fn time(raw: &str, field: &str) -> ApiResult<DateTime<Utc>> {
    let separated = matches!(raw.as_bytes().get(10), Some(b'T' | b't'));
    match DateTime::parse_from_rfc3339(raw) {
        Ok(t) if separated => Ok(t.with_timezone(&Utc)),
        _ => Err(ApiError::bad(format!(
            "`{field}` must be an RFC 3339 date-time such as 2026-03-29T01:30:00Z, not {raw:?}"
        ))),
    }
}

/// Query parameters, unknown ones refused.
pub fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(q)| q).map_err(|e| ApiError::bad(e.body_text()))
}

/// A required JSON body.
pub fn json<T>(body: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    Ok(body?.0)
}

/// A JSON body that may be left out: nothing (or only blanks) is `None`;
/// anything else must be JSON and say so in its content type.
pub fn optional_json<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> ApiResult<Option<T>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let json =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next()).is_some_and(
            |media| {
                let media = media.trim().to_ascii_lowercase();
                media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
            },
        );
    if !json {
        return Err(unsupported_media_type());
    }
    serde_json::from_slice(body).map(Some).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_canonical_positive_numbers() {
        let parse = |s: &str| id(Ok(Path(s.to_owned())), "incident").ok();
        assert_eq!(parse("7"), Some(7));
        assert_eq!(parse("9223372036854775807"), Some(i64::MAX));
        for bad in ["0", "-1", "+7", "07", "7.0", "", "9223372036854775808", " 7"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn text_needs_a_visible_character_and_no_nul() {
        assert!(text("ok", "by", 5).is_ok());
        assert!(text(" \t\r\n", "by", 5).is_err());
        assert!(text("a\0", "by", 5).is_err());
        assert!(text("ééééé", "by", 5).is_ok(), "characters, not bytes");
        assert!(text("éééééé", "by", 5).is_err());
    }

    #[test]
    fn times_are_strict_rfc3339() {
        assert!(time("2026-03-29T01:30:00Z", "at").is_ok());
        assert!(time("2026-03-29t01:30:00.5+09:00", "at").is_ok());
        assert!(time("2026-03-29 01:30:00Z", "at").is_err());
        assert!(time("yesterday", "at").is_err());
    }
}
