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

use crate::promql::{Labels, PointVisitor, Sample, Selector, SeriesSource};

const FINE: Duration = Duration::from_secs(15 * 60);
const COARSE_STEP_MS: i64 = 60_000;
/// The most series the store keeps. The rules select a few hundred from a
/// healthy target; a target whose label values ran away (a raw path or id
/// as a label) must not grow the pager without end. Series beyond it are
/// dropped and their samples counted (`alerting_scrape_series_dropped_total`).
pub const MAX_SERIES: usize = 100_000;

#[derive(Debug, Clone)]
pub struct Target {
    pub job: String,
    pub url: String,
}

struct Series {
    labels: Labels,
    points: VecDeque<(i64, f64)>,
    target: usize,
}

/// Series history for the selectors the rules use.
///
/// Series live in a slab; `by_name` and `postings` (label=value → series)
/// index it, so a selector with an equality matcher reads only the series
/// it can match instead of scanning every series of its metric.
pub struct Store {
    targets: Vec<Target>,
    interest: Vec<(Selector, Duration)>,
    keep_ms: i64,
    series: Vec<Series>,
    ids: HashMap<Labels, usize>,
    by_name: HashMap<String, Vec<usize>>,
    postings: HashMap<(String, String), Vec<usize>>,
    /// Time of each target's latest scrape, `None` when it failed.
    last_ok: Vec<Option<i64>>,
    now_ms: i64,
    last_compaction_ms: i64,
    max_series: usize,
    /// Samples of new series refused since the last [`Store::take_dropped`].
    dropped: u64,
}

impl Store {
    /// `interest`: every selector the rules evaluate with the range it needs.
    pub fn new(targets: Vec<Target>, interest: Vec<(Selector, Duration)>) -> Self {
        let longest = interest.iter().map(|(_, d)| *d).max().unwrap_or_default();
        // A range query at `now` looks back `range`; keep one coarse step
        // more so the window's first point exists.
        let keep_ms = (longest.as_millis() as i64) + 2 * COARSE_STEP_MS;
        let last_ok = vec![None; targets.len()];
        Self {
            targets,
            interest,
            keep_ms,
            series: Vec::new(),
            ids: HashMap::new(),
            by_name: HashMap::new(),
            postings: HashMap::new(),
            last_ok,
            now_ms: 0,
            last_compaction_ms: 0,
            max_series: MAX_SERIES,
            dropped: 0,
        }
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
        let base: Labels =
            [("job".to_owned(), target.job.clone()), ("instance".to_owned(), instance_of(&target.url))].into();
        let mut up = base.clone();
        up.insert("__name__".into(), "up".into());
        self.push(up, index, at_ms, if body.is_some() { 1.0 } else { 0.0 });
        let previous = self.last_ok[index];
        self.last_ok[index] = body.map(|_| at_ms);
        if let Some(body) = body {
            for line in body.lines() {
                if let Some((name, mut labels, value)) = parse_line(line) {
                    let counter = is_counter(&name);
                    labels.extend(base.iter().map(|(k, v)| (k.clone(), v.clone())));
                    labels.insert("__name__".into(), name);
                    // Known series skip the (regex) interest check.
                    if !self.ids.contains_key(&labels) {
                        let name = labels.get("__name__").map_or("", String::as_str);
                        if !self.wanted(name, &labels) {
                            continue;
                        }
                    }
                    // A counter series that was absent from the previous
                    // good scrape of its target was 0 then (client
                    // libraries create a labelled counter on its first
                    // increment). Saying so lets rate() see a brand-new
                    // error series one scrape earlier than Prometheus does.
                    if counter
                        && let Some(previous) = previous
                        && !self.ids.contains_key(&labels)
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

    /// At most `max` series are kept (see [`MAX_SERIES`]).
    pub fn with_max_series(mut self, max: usize) -> Self {
        self.max_series = max;
        self
    }

    /// How many samples of new series were refused since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    fn push(&mut self, labels: Labels, target: usize, at: i64, value: f64) {
        let id = match self.ids.get(&labels) {
            Some(&id) => id,
            None if self.series.len() >= self.max_series => {
                self.dropped += 1;
                return;
            }
            None => {
                let id = self.series.len();
                self.index(id, &labels);
                self.ids.insert(labels.clone(), id);
                self.series.push(Series { labels, points: VecDeque::new(), target });
                id
            }
        };
        self.series[id].points.push_back((at, value));
    }

    fn index(&mut self, id: usize, labels: &Labels) {
        for (k, v) in labels {
            if k == "__name__" {
                self.by_name.entry(v.clone()).or_default().push(id);
            } else {
                self.postings.entry((k.clone(), v.clone())).or_default().push(id);
            }
        }
    }

    /// Drops points older than the longest window and thins those older
    /// than [`FINE`] to one per minute; forgets series with no points left.
    fn compact(&mut self) {
        let oldest = self.now_ms - self.keep_ms;
        let fine_from = self.now_ms - FINE.as_millis() as i64;
        for series in &mut self.series {
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
        }
        if self.series.iter().any(|s| s.points.is_empty()) {
            // Rare (a series gone for the whole window): rebuild the indexes.
            let kept: Vec<Series> =
                std::mem::take(&mut self.series).into_iter().filter(|s| !s.points.is_empty()).collect();
            self.ids.clear();
            self.by_name.clear();
            self.postings.clear();
            for (id, series) in kept.iter().enumerate() {
                let labels = series.labels.clone();
                self.index(id, &labels);
                self.ids.insert(labels, id);
            }
            self.series = kept;
        }
    }

    /// The series a selector can match: the shortest index list among its
    /// name and equality matchers, then the full match.
    fn candidates<'a>(&'a self, selector: &'a Selector) -> impl Iterator<Item = &'a Series> + 'a {
        const EMPTY: &[usize] = &[];
        let mut best: Option<&[usize]> =
            selector.name.as_ref().map(|n| self.by_name.get(n).map_or(EMPTY, Vec::as_slice));
        for m in &selector.matchers {
            if let crate::promql::MatchOp::Eq(v) = &m.op
                && !v.is_empty()
            {
                let list = self.postings.get(&(m.label.clone(), v.clone())).map_or(EMPTY, Vec::as_slice);
                if best.is_none_or(|b| list.len() < b.len()) {
                    best = Some(list);
                }
            }
        }
        let ids: Box<dyn Iterator<Item = usize> + 'a> = match best {
            Some(list) => Box::new(list.iter().copied()),
            None => Box::new(0..self.series.len()),
        };
        ids.map(|id| &self.series[id]).filter(move |s| {
            let name = s.labels.get("__name__").map_or("", String::as_str);
            selector.matches(name, &s.labels)
        })
    }
}

impl SeriesSource for Store {
    fn instant(&self, selector: &Selector) -> Vec<Sample> {
        self.candidates(selector)
            .filter_map(|series| {
                let &(t, value) = series.points.back()?;
                // Stale unless it was in its target's latest good scrape
                // (`up` is written on every scrape, good or not).
                let fresh =
                    series.labels.get("__name__").is_some_and(|n| n == "up") || self.last_ok[series.target] == Some(t);
                fresh.then(|| Sample { labels: series.labels.clone(), value })
            })
            .collect()
    }

    fn range(&self, selector: &Selector, range: Duration, f: &mut PointVisitor<'_>) {
        let from = self.now_ms - range.as_millis() as i64;
        for series in self.candidates(selector) {
            // Points are in time order: skip to the window's start.
            let start = series.points.partition_point(|p| p.0 <= from);
            if start < series.points.len() {
                f(&series.labels, &mut series.points.range(start..).copied());
            }
        }
    }

    fn now_ms(&self) -> i64 {
        self.now_ms
    }
}

/// Counters by the naming convention (and histogram parts), the only
/// series for which "absent" means "zero".
fn is_counter(name: &str) -> bool {
    ["_total", "_count", "_sum", "_bucket"].iter().any(|s| name.ends_with(s))
}

/// `host:port` of a target URL, as Prometheus labels it. Credentials in the
/// URL (`user:pass@`) are dropped: labels reach pages, incidents and logs.
fn instance_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority.rsplit_once('@').map_or(authority, |(_, host)| host).to_owned()
}

pub use promtext::parse_line;

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
            Some((
                "x_total".into(),
                [("route".to_string(), "/a,b".to_string()), ("msg".into(), "say \"hi\"".into())].into(),
                3.0
            ))
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
        // 5 more in 5 s, extrapolated back 1 s (to where the counter was 0),
        // over the 5-minute window, as Prometheus computes it.
        let r = query(&s, "sum(rate(req_total{status=~\"5..\"}[5m]))");
        assert!((r[0].value - 6.0 / 300.0).abs() < 1e-9, "{r:?}");
        s.ingest(0, 10_000, None);
        assert!(query(&s, "req_total").is_empty(), "stale after a failed scrape");
        assert_eq!(query(&s, "up")[0].value, 0.0);
        assert_eq!(query(&s, "up")[0].labels["instance"], "127.0.0.1:8080");
    }

    #[test]
    fn series_beyond_the_cap_are_dropped_and_counted_while_known_ones_go_on() {
        let mut s = store(&["sum(rate(req_total[5m]))"]).with_max_series(3);
        let body = |n: usize| (0..n).map(|i| format!("req_total{{path=\"/p{i}\"}} 1\n")).collect::<String>();
        s.ingest(0, 0, Some(&body(10)));
        assert_eq!(s.series_count(), 3, "up and two request series");
        assert_eq!(s.take_dropped(), 8);
        s.ingest(0, 5_000, Some(&body(10)));
        assert_eq!(s.series_count(), 3);
        assert!(s.take_dropped() >= 8, "counted again at each scrape");
        assert_eq!(s.take_dropped(), 0);
    }

    #[test]
    fn a_counter_series_born_between_scrapes_counts_from_zero() {
        let mut s = store(&["sum(rate(req_total{status=~\"5..\"}[5m]))"]);
        s.ingest(0, 0, Some("req_total{status=\"200\"} 10\n"));
        s.ingest(0, 5_000, Some("req_total{status=\"200\"} 20\nreq_total{status=\"503\"} 50\n"));
        let r = query(&s, "sum(rate(req_total{status=~\"5..\"}[5m]))");
        assert!(
            (r[0].value - 50.0 / 300.0).abs() < 1e-9,
            "50 errors in the 5m window, visible at the first scrape that has them: {r:?}"
        );
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
        let points = s.series.iter().find(|x| x.points.len() > 10).unwrap().points.len();
        assert!(points < 300, "thinned to about one a minute beyond 15 min: {points}");
        let r = query(&s, "increase(c_total[1h])");
        // One increment per 5 s: 720 an hour.
        assert!((r[0].value - 720.0).abs() < 15.0, "{r:?}");
    }
}
