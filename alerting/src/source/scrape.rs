//! The embedded metric source: scrape `/metrics` endpoints directly and
//! keep just enough history for the rules' windows, so the platform pages
//! without any Prometheus running.
//!
//! Only series some rule selects are kept. Points younger than
//! [`FINE`] are all kept; older ones are thinned to one a minute, which is
//! what a 6 h or 3 d burn-rate window needs. Like Prometheus, every scrape
//! adds a synthetic `up{job,instance}` (1 or 0), and a series missing from
//! the latest scrape of its target is stale: instant queries skip it.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use crate::promql::{Labels, Sample, Selector, SeriesSource};

const FINE: Duration = Duration::from_secs(15 * 60);
const COARSE_STEP_MS: i64 = 60_000;

#[derive(Debug, Clone)]
pub struct Target {
    pub job: String,
    pub url: String,
}

#[derive(Default)]
struct Series {
    points: VecDeque<(i64, f64)>,
    target: usize,
}

/// Series history for the selectors the rules use.
pub struct Store {
    targets: Vec<Target>,
    interest: Vec<(Selector, Duration)>,
    keep_ms: i64,
    series: HashMap<Labels, Series>,
    by_name: HashMap<String, Vec<Labels>>,
    /// Time of each target's latest scrape, `None` when it failed.
    last_ok: Vec<Option<i64>>,
    now_ms: i64,
    last_compaction_ms: i64,
}

impl Store {
    /// `interest`: every selector the rules evaluate with the range it needs.
    pub fn new(targets: Vec<Target>, interest: Vec<(Selector, Duration)>) -> Self {
        let longest = interest.iter().map(|(_, d)| *d).max().unwrap_or_default();
        // A range query at `now` looks back `range`; keep one coarse step
        // more so the window's first point exists.
        let keep_ms = (longest.as_millis() as i64) + 2 * COARSE_STEP_MS;
        let last_ok = vec![None; targets.len()];
        Self { targets, interest, keep_ms, series: HashMap::new(), by_name: HashMap::new(), last_ok, now_ms: 0, last_compaction_ms: 0 }
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Records one scrape of target `index` at `at_ms`: the exposition text,
    /// or `None` when the scrape failed.
    pub fn ingest(&mut self, index: usize, at_ms: i64, body: Option<&str>) {
        self.now_ms = self.now_ms.max(at_ms);
        let target = &self.targets[index];
        let base: Labels = [("job".to_owned(), target.job.clone()), ("instance".to_owned(), instance_of(&target.url))].into();
        let mut up = base.clone();
        up.insert("__name__".into(), "up".into());
        self.push(up, index, at_ms, if body.is_some() { 1.0 } else { 0.0 });
        let previous = self.last_ok[index];
        self.last_ok[index] = body.map(|_| at_ms);
        if let Some(body) = body {
            for line in body.lines() {
                if let Some((name, mut labels, value)) = parse_line(line)
                    && self.wanted(&name, &labels)
                {
                    let counter = is_counter(&name);
                    labels.extend(base.iter().map(|(k, v)| (k.clone(), v.clone())));
                    labels.insert("__name__".into(), name);
                    // A counter series that was absent from the previous
                    // good scrape of its target was 0 then (client
                    // libraries create a labelled counter on its first
                    // increment). Saying so lets rate() see a brand-new
                    // error series one scrape earlier than Prometheus does.
                    if counter
                        && let Some(previous) = previous
                        && !self.series.contains_key(&labels)
                    {
                        self.push(labels.clone(), index, previous, 0.0);
                    }
                    self.push(labels, index, at_ms, value);
                }
            }
        }
        if at_ms - self.last_compaction_ms >= COARSE_STEP_MS {
            self.compact();
            self.last_compaction_ms = at_ms;
        }
    }

    fn wanted(&self, name: &str, labels: &Labels) -> bool {
        self.interest.iter().any(|(s, _)| s.matches(name, labels))
    }

    fn push(&mut self, labels: Labels, target: usize, at: i64, value: f64) {
        let series = self.series.entry(labels).or_insert_with_key(|key| {
            let name = key.get("__name__").cloned().unwrap_or_default();
            self.by_name.entry(name).or_default().push(key.clone());
            Series { points: VecDeque::new(), target }
        });
        series.points.push_back((at, value));
    }

    /// Drops points older than the longest window and thins those older
    /// than [`FINE`] to one per minute; forgets series with no points left.
    fn compact(&mut self) {
        let oldest = self.now_ms - self.keep_ms;
        let fine_from = self.now_ms - FINE.as_millis() as i64;
        let mut emptied = Vec::new();
        for (labels, series) in &mut self.series {
            while series.points.front().is_some_and(|p| p.0 < oldest) {
                series.points.pop_front();
            }
            let mut last_kept: Option<i64> = None;
            series.points.retain(|&(t, _)| {
                if t >= fine_from {
                    return true;
                }
                let keep = last_kept.is_none_or(|k| t - k >= COARSE_STEP_MS);
                if keep {
                    last_kept = Some(t);
                }
                keep
            });
            if series.points.is_empty() {
                emptied.push(labels.clone());
            }
        }
        for labels in emptied {
            self.series.remove(&labels);
            if let Some(keys) = labels.get("__name__").and_then(|n| self.by_name.get_mut(n)) {
                keys.retain(|k| k != &labels);
            }
        }
    }

    fn candidates<'a>(&'a self, selector: &'a Selector) -> Box<dyn Iterator<Item = (&'a Labels, &'a Series)> + 'a> {
        let matches = move |labels: &Labels| {
            let name = labels.get("__name__").map_or("", String::as_str);
            selector.matches(name, labels)
        };
        match &selector.name {
            Some(name) => Box::new(
                self.by_name.get(name).into_iter().flatten().filter_map(|k| self.series.get_key_value(k)).filter(move |(l, _)| matches(l)),
            ),
            None => Box::new(self.series.iter().filter(move |(l, _)| matches(l))),
        }
    }
}

impl SeriesSource for Store {
    fn instant(&self, selector: &Selector) -> Vec<Sample> {
        self.candidates(selector)
            .filter_map(|(labels, series)| {
                let &(t, value) = series.points.back()?;
                // Stale unless it was in its target's latest good scrape
                // (`up` is written on every scrape, good or not).
                let fresh = labels.get("__name__").is_some_and(|n| n == "up") || self.last_ok[series.target] == Some(t);
                fresh.then(|| Sample { labels: labels.clone(), value })
            })
            .collect()
    }

    fn range(&self, selector: &Selector, range: Duration) -> Vec<(Labels, Vec<(i64, f64)>)> {
        let from = self.now_ms - range.as_millis() as i64;
        self.candidates(selector)
            .map(|(labels, series)| (labels.clone(), series.points.iter().copied().filter(|p| p.0 > from).collect::<Vec<_>>()))
            .filter(|(_, points)| !points.is_empty())
            .collect()
    }
}

/// Counters by the naming convention (and histogram parts), the only
/// series for which "absent" means "zero".
fn is_counter(name: &str) -> bool {
    ["_total", "_count", "_sum", "_bucket"].iter().any(|s| name.ends_with(s))
}

fn instance_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// One sample line of the Prometheus text format:
/// `name{a="b",c="d"} value [timestamp]`. Comments and malformed lines give
/// `None` (a scrape keeps what it can read).
pub fn parse_line(line: &str) -> Option<(String, Labels, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_owned();
    let mut labels = Labels::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    rest = &body[i + 1..];
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::{eval, parse};

    fn store(exprs: &[&str]) -> Store {
        let parsed: Vec<_> = exprs.iter().map(|e| parse(e).unwrap()).collect();
        let interest = parsed.iter().flat_map(|e| e.selectors().into_iter().map(|(s, d)| (s.clone(), d))).collect();
        Store::new(vec![Target { job: "booking".into(), url: "http://127.0.0.1:8080/metrics".into() }], interest)
    }

    fn query(store: &Store, expr: &str) -> Vec<Sample> {
        eval(&parse(expr).unwrap(), store).unwrap().into_samples()
    }

    #[test]
    fn the_text_format_parses_with_escapes_and_special_values() {
        assert_eq!(
            parse_line(r#"x_total{route="/a,b",msg="say \"hi\""} 3 1700000000"#),
            Some(("x_total".into(), [("route".to_string(), "/a,b".to_string()), ("msg".into(), "say \"hi\"".into())].into(), 3.0))
        );
        assert_eq!(parse_line("up 1").map(|l| l.2), Some(1.0));
        assert!(parse_line("h_bucket{le=\"+Inf\"} +Inf").unwrap().2.is_infinite());
        assert_eq!(parse_line("# HELP x y"), None);
        assert_eq!(parse_line("broken{a=\"b\" 1"), None);
    }

    #[test]
    fn only_selected_series_are_kept_and_a_failed_scrape_makes_them_stale() {
        let mut s = store(&["sum(rate(req_total{status=~\"5..\"}[5m]))", "up"]);
        s.ingest(0, 0, Some("req_total{status=\"500\"} 1\nreq_total{status=\"200\"} 9\nother 1\n"));
        assert_eq!(s.series_count(), 2, "the 500 series and up");
        s.ingest(0, 5_000, Some("req_total{status=\"500\"} 6\n"));
        let r = query(&s, "sum(rate(req_total{status=~\"5..\"}[5m]))");
        assert!((r[0].value - 1.0).abs() < 1e-9, "{r:?}");
        s.ingest(0, 10_000, None);
        assert!(query(&s, "req_total").is_empty(), "stale after a failed scrape");
        assert_eq!(query(&s, "up")[0].value, 0.0);
        assert_eq!(query(&s, "up")[0].labels["instance"], "127.0.0.1:8080");
    }

    #[test]
    fn a_counter_series_born_between_scrapes_counts_from_zero() {
        let mut s = store(&["sum(rate(req_total{status=~\"5..\"}[5m]))"]);
        s.ingest(0, 0, Some("req_total{status=\"200\"} 10\n"));
        s.ingest(0, 5_000, Some("req_total{status=\"200\"} 20\nreq_total{status=\"503\"} 50\n"));
        let r = query(&s, "sum(rate(req_total{status=~\"5..\"}[5m]))");
        assert!((r[0].value - 10.0).abs() < 1e-9, "50 errors in 5 s, visible at the first scrape that has them: {r:?}");
        // Not on the very first scrape: nothing says the series was 0.
        let mut fresh = store(&["sum(rate(req_total[5m]))"]);
        fresh.ingest(0, 0, Some("req_total 50\n"));
        assert!(query(&fresh, "sum(rate(req_total[5m]))").is_empty());
    }

    #[test]
    fn history_is_thinned_but_covers_the_longest_window() {
        let mut s = store(&["increase(c_total[1h])"]);
        for i in 0..=(2 * 3600 / 5) {
            s.ingest(0, i * 5_000, Some(&format!("c_total {}\n", i)));
        }
        let points = s.series.values().find(|x| x.points.len() > 10).unwrap().points.len();
        assert!(points < 300, "thinned to about one a minute beyond 15 min: {points}");
        let r = query(&s, "increase(c_total[1h])");
        // One increment per 5 s: 720 an hour.
        assert!((r[0].value - 720.0).abs() < 15.0, "{r:?}");
    }
}
