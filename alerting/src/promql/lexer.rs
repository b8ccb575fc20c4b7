//! Tokens and durations: the PromQL subset's lexer.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Dur(Duration),
    Punct(&'static str),
}

pub(super) fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let err = |message: String, at: usize| ParseError { message, at, expr: src.to_owned() };
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_brackets = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if in_brackets && c != ']' {
            let mut j = i;
            while j < chars.len() && chars[j] != ']' {
                j += 1;
            }
            let text: String = chars[i..j].iter().collect::<String>().trim().to_owned();
            if text.contains(':') {
                return Err(err(format!("subquery `[{text}]` is not supported"), start));
            }
            let range = parse_duration(&text).map_err(|why| err(format!("bad range `[{text}]`: {why}"), start))?;
            out.push((Tok::Dur(range), start));
            i = j;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut j = i;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_' || chars[j] == ':') {
                j += 1;
            }
            out.push((Tok::Ident(chars[i..j].iter().collect()), start));
            i = j;
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let mut j = i;
            while j < chars.len()
                && (chars[j].is_ascii_digit()
                    || chars[j] == '.'
                    || chars[j] == 'e'
                    || chars[j] == 'E'
                    || ((chars[j] == '-' || chars[j] == '+') && matches!(chars[j - 1], 'e' | 'E')))
            {
                j += 1;
            }
            let text: String = chars[i..j].iter().collect();
            out.push((Tok::Num(text.parse().map_err(|_| err(format!("bad number `{text}`"), start))?), start));
            i = j;
        } else if c == '"' || c == '\'' {
            let mut j = i + 1;
            let mut value = String::new();
            loop {
                match chars.get(j) {
                    None => return Err(err("unterminated string".into(), start)),
                    Some(&q) if q == c => break,
                    Some('\\') => {
                        match chars.get(j + 1) {
                            Some('n') => value.push('\n'),
                            Some('t') => value.push('\t'),
                            Some(&other) => value.push(other),
                            None => return Err(err("unterminated string".into(), start)),
                        }
                        j += 2;
                    }
                    Some(&other) => {
                        value.push(other);
                        j += 1;
                    }
                }
            }
            out.push((Tok::Str(value), start));
            i = j + 1;
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if let op @ ("==" | ">=" | "<=") = two.as_str() {
                return Err(err(
                    format!("comparison `{op}` is not supported in expr: the threshold goes in above/below"),
                    start,
                ));
            }
            let punct = match two.as_str() {
                "!=" => Some("!="),
                "=~" => Some("=~"),
                "!~" => Some("!~"),
                _ => None,
            };
            if let Some(p) = punct {
                out.push((Tok::Punct(p), start));
                i += 2;
                continue;
            }
            let p = match c {
                '(' => "(",
                ')' => ")",
                '{' => "{",
                '}' => "}",
                '[' => "[",
                ']' => "]",
                ',' => ",",
                '+' => "+",
                '-' => "-",
                '*' => "*",
                '/' => "/",
                '=' => "=",
                '>' | '<' => {
                    return Err(err(
                        format!("comparison `{c}` is not supported in expr: the threshold goes in above/below"),
                        start,
                    ));
                }
                '^' | '%' => return Err(err(format!("operator `{c}` is not supported"), start)),
                other => return Err(err(format!("unexpected `{other}`"), start)),
            };
            in_brackets = c == '[';
            out.push((Tok::Punct(p), start));
            i += 1;
        }
    }
    Ok(out)
}

/// The longest duration [`parse_duration`] accepts: ten years. Every
/// duration becomes milliseconds added to a timestamp somewhere (a rule's
/// `for`, a silence's end), and this keeps that arithmetic far from
/// overflowing `i64`.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// `30s`, `5m`, `1h`, `3d`, or a combination like `1h30m` (largest unit
/// first, each once), as PromQL writes them, up to [`MAX_DURATION`]. The
/// one duration syntax of rule files, ranges, intervals and silences.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("empty".to_string());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    let mut last_unit = u64::MAX;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err("expected a number followed by s, m, h or d".to_string());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| "number too large".to_string())?;
        let unit_char = rest[digits..].chars().next().ok_or("missing unit (s, m, h or d)")?;
        let unit = match unit_char {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            other => return Err(format!("unknown unit `{other}` (use s, m, h or d)")),
        };
        if unit >= last_unit {
            return Err("units must go from largest to smallest, each once".to_string());
        }
        last_unit = unit;
        total = number
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| "number too large".to_string())?;
        rest = &rest[digits + unit_char.len_utf8()..];
    }
    let duration = Duration::from_secs(total);
    if duration > MAX_DURATION {
        return Err("longer than 3650d (ten years)".to_string());
    }
    Ok(duration)
}

/// Writes a duration the way [`parse_duration`] reads it and Prometheus
/// writes one (`7d`, `1h30m`, `0s`).
pub fn format_duration(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, suffix) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
        if secs >= unit {
            out.push_str(&format!("{}{suffix}", secs / unit));
            secs %= unit;
        }
    }
    out
}

/// PromQL words outside the subset, with what to write instead.
pub(super) fn keyword(word: &str) -> Option<String> {
    match word {
        "and" | "or" | "unless" => {
            Some(format!("`{word}` is not supported in expr: list extra conditions under `and:` (they must all hold)"))
        }
        "on" | "ignoring" | "group_left" | "group_right" => {
            Some(format!("`{word}` is not supported: binary operations match on identical label sets"))
        }
        "offset" | "bool" => Some(format!("`{word}` is not supported here")),
        _ => None,
    }
}
