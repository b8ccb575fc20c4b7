//! One way to say where a problem in a YAML file is, for every config file
//! of the platform (alert rules, the roster, API key files, runbook steps):
//! `file:line: message`, the form editors jump to.

use std::fmt;

/// Where in a file something is: `rules.yaml:17`, or the file alone when
/// the line is not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    pub origin: String,
    /// 1-based.
    pub line: Option<usize>,
}

impl At {
    pub fn new(origin: impl Into<String>, line: Option<usize>) -> Self {
        Self { origin: origin.into(), line }
    }

    /// The file as a whole.
    pub fn file(origin: impl Into<String>) -> Self {
        Self::new(origin, None)
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.origin),
            None => f.write_str(&self.origin),
        }
    }
}

/// A YAML parse or schema error as where it is and what it says, without
/// the parser's own " at line L column C" (the place says it). `offset`
/// lines come before the YAML in `origin` (a block inside a Markdown
/// file); 0 for a whole YAML file.
pub fn locate(error: &serde_norway::Error, origin: &str, offset: usize) -> (At, String) {
    let text = error.to_string();
    match error.location() {
        Some(location) => {
            let suffix = format!(" at line {} column {}", location.line(), location.column());
            let message = match text.find(&suffix) {
                Some(i) => format!("{}{}", &text[..i], &text[i + suffix.len()..]),
                None => text,
            };
            (At::new(origin, Some(offset + location.line())), message)
        }
        None => (At::file(origin), text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        name: String,
    }

    #[test]
    fn an_error_is_placed_at_its_line_and_says_it_once() {
        let err = serde_norway::from_str::<Doc>("name: a\nage: 3\n").unwrap_err();
        let (at, message) = locate(&err, "people.yaml", 0);
        assert_eq!(at.to_string(), "people.yaml:2");
        assert!(message.contains("unknown field `age`") && !message.contains("line 2"), "{message}");
        let (at, _) = locate(&err, "book.md", 10);
        assert_eq!(at, At::new("book.md", Some(12)), "lines after the block's start");
        assert_eq!(At::file("x.yaml").to_string(), "x.yaml");
    }
}
