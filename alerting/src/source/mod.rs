//! Where rule expressions get their values: the Prometheus HTTP API, or a
//! direct scrape of `/metrics` endpoints evaluated in process (the
//! embedded default).

pub mod scrape;

use std::{collections::HashMap, time::Duration};

use serde::Deserialize;

use crate::promql::{self, Expr, Labels, Sample};

/// Each expression's result: its series, or why it could not be evaluated.
pub type Results = HashMap<String, Result<Vec<Sample>, String>>;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the metric source is unreachable: {0}")]
    Unavailable(String),
}

pub enum Source {
    Prometheus { base_url: String, client: reqwest::Client },
    Scrape { store: Box<scrape::Store>, parsed: HashMap<String, Expr>, client: reqwest::Client },
}

impl Source {
    pub fn prometheus(base_url: &str, timeout: Duration) -> Self {
        let client = client(timeout);
        Source::Prometheus { base_url: base_url.trim_end_matches('/').to_owned(), client }
    }

    /// A scraping source for `exprs` (which must parse in the embedded
    /// subset; rules are checked at load time).
    pub fn scrape(targets: Vec<scrape::Target>, exprs: &[&str], timeout: Duration) -> Result<Self, promql::ParseError> {
        let mut parsed = HashMap::new();
        for e in exprs {
            parsed.insert((*e).to_owned(), promql::parse(e)?);
        }
        let interest = parsed.values().flat_map(|e| e.selectors().into_iter().map(|(s, d)| (s.clone(), d))).collect();
        let client = client(timeout);
        Ok(Source::Scrape { store: Box::new(scrape::Store::new(targets, interest)), parsed, client })
    }

    /// Samples of series the scrape store refused (over its cap) since the last call.
    pub fn take_dropped_series(&mut self) -> u64 {
        match self {
            Source::Scrape { store, .. } => store.take_dropped(),
            Source::Prometheus { .. } => 0,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Source::Prometheus { .. } => "prometheus",
            Source::Scrape { .. } => "scrape",
        }
    }

    /// Scrapes (for the scrape source) and evaluates every expression at
    /// `now_ms`.
    pub async fn evaluate(&mut self, exprs: &[&str], now_ms: i64) -> Result<Results, SourceError> {
        match self {
            Source::Prometheus { base_url, client } => {
                let queries = exprs.iter().map(|e| query_prometheus(client, base_url, e, now_ms));
                let answers = futures::future::join_all(queries).await;
                let mut results = Results::new();
                let mut unreachable = None;
                for (expr, answer) in exprs.iter().zip(answers) {
                    match answer {
                        Err(QueryError::Unreachable(e)) => unreachable = Some(e),
                        Err(QueryError::Rejected(e)) => {
                            results.insert((*expr).to_owned(), Err(e));
                        }
                        Ok(samples) => {
                            results.insert((*expr).to_owned(), Ok(samples));
                        }
                    }
                }
                match unreachable {
                    Some(e) if results.is_empty() => Err(SourceError::Unavailable(e)),
                    _ => Ok(results),
                }
            }
            Source::Scrape { store, parsed, client } => {
                let fetches = store.targets().iter().map(|t| fetch_metrics(client, &t.url)).collect::<Vec<_>>();
                let bodies = futures::future::join_all(fetches).await;
                for (i, body) in bodies.iter().enumerate() {
                    store.ingest(i, now_ms, body.as_deref());
                }
                let mut results = Results::new();
                for expr in exprs {
                    let result = match parsed.get(*expr) {
                        Some(e) => {
                            promql::eval(e, store.as_ref()).map(promql::Value::into_samples).map_err(|e| e.to_string())
                        }
                        None => Err("expression was not registered with the scrape source".into()),
                    };
                    results.insert((*expr).to_owned(), result);
                }
                Ok(results)
            }
        }
    }
}

/// A scrape larger than this fails (its target counts as down): the body is
/// held whole while it is parsed.
const MAX_SCRAPE_BYTES: usize = 32 * 1024 * 1024;

async fn fetch_metrics(client: &reqwest::Client, url: &str) -> Option<String> {
    // Plain text format: no exemplars to skip.
    let mut response = client.get(url).header("accept", "text/plain; version=0.0.4").send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len() + chunk.len() > MAX_SCRAPE_BYTES {
            tracing::warn!(
                max_bytes = MAX_SCRAPE_BYTES,
                "a scrape was larger than the limit; the target counts as down"
            );
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).ok()
}

enum QueryError {
    Unreachable(String),
    Rejected(String),
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    data: Option<ApiData>,
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum ApiData {
    Vector(Vec<ApiSample>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct ApiSample {
    metric: Labels,
    value: (f64, String),
}

fn number(text: &str) -> f64 {
    match text {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or(f64::NAN),
    }
}

async fn query_prometheus(
    client: &reqwest::Client,
    base: &str,
    expr: &str,
    now_ms: i64,
) -> Result<Vec<Sample>, QueryError> {
    let time = format!("{:.3}", now_ms as f64 / 1000.0);
    let response = client
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", expr), ("time", time.as_str())])
        .send()
        .await
        // The URL may carry credentials (`http://user:pass@host`): errors
        // are logged, so they never include it.
        .map_err(|e| QueryError::Unreachable(e.without_url().to_string()))?;
    let status = response.status();
    if status.is_server_error() && status.as_u16() != 503 && status.as_u16() != 422 {
        return Err(QueryError::Unreachable(format!("HTTP {status}")));
    }
    let body: ApiResponse = response.json().await.map_err(|e| QueryError::Unreachable(e.without_url().to_string()))?;
    if body.status != "success" {
        return Err(QueryError::Rejected(body.error.unwrap_or_else(|| format!("HTTP {status}"))));
    }
    Ok(match body.data {
        Some(ApiData::Vector(v)) => {
            v.into_iter().map(|s| Sample { labels: s.metric, value: number(&s.value.1) }).collect()
        }
        Some(ApiData::Scalar((_, v))) => vec![Sample { labels: Labels::new(), value: number(&v) }],
        _ => return Err(QueryError::Rejected("the expression must return an instant vector or scalar".into())),
    })
}

/// The scrape and Prometheus client. An idle connection is not reused after
/// 5 s: booking closes a kept-alive one after 10 s idle, and a scrape sent
/// on it at that instant would fail as a reset (and read as `up == 0`).
fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .expect("a plain HTTP client builds")
}
