//! The Redis key layout: one hash tag per concert.
//!
//! A concert's line (place numbers, waiting and active sets, counter, last
//! admitted tick) and its seats' fast-path flags share the tag
//! `{prefix:c<concert>}`, so every script touches one slot, and on a Redis
//! Cluster different concerts spread over the masters. The set of concerts
//! that have a line is the one key outside any concert, `{prefix}:lines`.

#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    /// The hash tag of one concert's keys.
    pub fn tag(&self, concert_id: i64) -> String {
        format!("{{{}:c{concert_id}}}", self.prefix)
    }

    /// One part of a concert's line: `current`, `waiting`, `active`, `seq` or `tick`.
    pub fn line(&self, concert_id: i64, part: &str) -> String {
        format!("{}:{part}", self.tag(concert_id))
    }

    pub fn seat(&self, concert_id: i64, seat_id: i64) -> String {
        format!("{}:seat:{seat_id}", self.tag(concert_id))
    }

    /// The set of concert ids with a line.
    pub fn lines(&self) -> String {
        format!("{{{}}}:lines", self.prefix)
    }

    /// Glob patterns that cover every key of this prefix (and no other prefix's).
    pub fn patterns(&self) -> [String; 2] {
        [format!("{{{}}}:*", self.prefix), format!("{{{}:c*", self.prefix)]
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn a_concerts_keys_share_its_tag_and_concerts_differ() {
        let keys = Keys::new("sale");
        assert_eq!(keys.line(42, "waiting"), "{sale:c42}:waiting");
        assert_eq!(keys.seat(42, 7), "{sale:c42}:seat:7");
        assert_eq!(keys.lines(), "{sale}:lines");
        assert_ne!(keys.tag(42), keys.tag(43));
    }
}
