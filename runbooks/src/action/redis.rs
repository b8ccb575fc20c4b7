//! Redis: memory against `maxmemory`, fragmentation, the eviction policy,
//! the largest keys (sampled, never a full `KEYS`), and `CONFIG SET` for the
//! policy and the limit.
//!
//! The booking queue lives in Redis without TTLs while seat flags carry
//! one, which is why the runbooks prefer `volatile-*` policies: they evict
//! flags, never a place in line.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::{Finding, num};
use crate::target::{Ctx, TargetError};

pub const POLICIES: &[&str] = &[
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
];

fn failed(e: redis::RedisError) -> TargetError {
    TargetError::failed(format!("redis: {e}"))
}

/// `INFO <section>` as key → value.
async fn info(ctx: &mut Ctx, section: &str) -> Result<HashMap<String, String>, TargetError> {
    let conn = ctx.redis().await?;
    let text: String = redis::cmd("INFO").arg(section).query_async(conn).await.map_err(failed)?;
    Ok(parse_info(&text))
}

fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn int(info: &HashMap<String, String>, key: &str) -> Result<u64, TargetError> {
    info.get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| TargetError::failed(format!("redis INFO has no numeric `{key}`")))
}

/// 1536 → "1.50K", as `redis-cli` writes sizes.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes}B") } else { format!("{value:.2}{}", UNITS[unit]) }
}

pub async fn memory(ctx: &mut Ctx) -> Result<Finding, TargetError> {
    let info = info(ctx, "memory").await?;
    let used = int(&info, "used_memory")?;
    let max = int(&info, "maxmemory")?;
    let ratio = (max > 0).then(|| used as f64 / max as f64);
    let summary = match ratio {
        Some(r) => format!("used {} of maxmemory {} ({:.0} %)", human(used), human(max), r * 100.0),
        None => format!("used {}; no maxmemory set (Redis grows until the host runs out)", human(used)),
    };
    Ok(Finding {
        summary,
        output: json!({
            "used_bytes": used,
            "maxmemory_bytes": max,
            "ratio": ratio.map_or(Value::Null, num),
            "peak_bytes": int(&info, "used_memory_peak").ok(),
            "rss_bytes": int(&info, "used_memory_rss").ok(),
            "used_human": human(used),
            "maxmemory_human": human(max),
        }),
    })
}

pub async fn fragmentation(ctx: &mut Ctx) -> Result<Finding, TargetError> {
    let info = info(ctx, "memory").await?;
    let ratio: Option<f64> = info.get("mem_fragmentation_ratio").and_then(|v| v.parse().ok());
    let rss = int(&info, "used_memory_rss")?;
    let used = int(&info, "used_memory")?;
    let bytes = int(&info, "mem_fragmentation_bytes").ok();
    let defrag = info.get("active_defrag_running").is_some_and(|v| v != "0");
    let summary = format!(
        "fragmentation ratio {} (RSS {} for {} used){}",
        ratio.map_or("?".into(), |r| format!("{r:.2}")),
        human(rss),
        human(used),
        if defrag { "; active defrag running" } else { "" }
    );
    Ok(Finding {
        summary,
        output: json!({
            "fragmentation_ratio": ratio.map_or(Value::Null, num),
            "fragmentation_bytes": bytes,
            "rss_bytes": rss,
            "used_bytes": used,
            "active_defrag": defrag,
        }),
    })
}

pub async fn eviction_policy(ctx: &mut Ctx) -> Result<Finding, TargetError> {
    let memory = info(ctx, "memory").await?;
    let stats = info(ctx, "stats").await?;
    let policy = memory
        .get("maxmemory_policy")
        .cloned()
        .ok_or_else(|| TargetError::failed("redis INFO has no maxmemory_policy"))?;
    let evicted = int(&stats, "evicted_keys")?;
    let summary = format!("maxmemory-policy {policy}; {evicted} keys evicted since start");
    Ok(Finding {
        summary,
        output: json!({
            "policy": policy,
            "evicted_keys": evicted,
            "evicts_keys_without_ttl": policy.starts_with("allkeys"),
        }),
    })
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LargestKeys {
    /// Keys looked at, at most: bounds the work on a big keyspace.
    #[serde(default = "thousand")]
    pub sample: u32,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default = "ten")]
    pub top: u32,
}

fn thousand() -> u32 {
    1000
}

fn ten() -> u32 {
    10
}

impl LargestKeys {
    pub fn checked(self) -> Result<Self, String> {
        if !(1..=100_000).contains(&self.sample) {
            return Err(format!("sample must be 1 to 100000, not {}", self.sample));
        }
        if !(1..=100).contains(&self.top) {
            return Err(format!("top must be 1 to 100, not {}", self.top));
        }
        Ok(self)
    }
}

/// A prefix as a SCAN pattern that matches it literally.
fn glob_prefix(prefix: &str) -> String {
    let mut out = String::new();
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('*');
    out
}

pub async fn largest_keys(ctx: &mut Ctx, args: &LargestKeys) -> Result<Finding, TargetError> {
    let conn = ctx.redis().await?;
    let pattern = glob_prefix(args.prefix.as_deref().unwrap_or(""));
    let limit = args.sample as usize;
    let mut cursor: u64 = 0;
    let mut sized: Vec<(String, u64)> = Vec::new();
    let mut sampled = 0usize;
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let complete = loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(200)
            .query_async(conn)
            .await
            .map_err(failed)?;
        // SCAN may return a key twice (while Redis rehashes): count it once.
        let keys: Vec<Vec<u8>> = keys.into_iter().filter(|k| seen.insert(k.clone())).take(limit - sampled).collect();
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("MEMORY").arg("USAGE").arg(key).arg("SAMPLES").arg(5);
            }
            let sizes: Vec<Option<u64>> = pipe.query_async(conn).await.map_err(failed)?;
            sampled += keys.len();
            // A key deleted between SCAN and MEMORY USAGE has no size.
            sized.extend(
                keys.iter().zip(sizes).filter_map(|(k, s)| Some((String::from_utf8_lossy(k).into_owned(), s?))),
            );
        }
        cursor = next;
        if cursor == 0 {
            break true;
        }
        if sampled >= limit {
            break false;
        }
    };
    let sampled_bytes: u64 = sized.iter().map(|(_, b)| b).sum();
    sized.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    sized.truncate(args.top as usize);
    let shown: Vec<String> = sized.iter().take(3).map(|(k, b)| format!("{k} {}", human(*b))).collect();
    let summary = format!(
        "{sampled} keys sampled{}{} ({} in all); largest: {}",
        args.prefix.as_deref().map(|p| format!(" under `{p}`")).unwrap_or_default(),
        if complete { ", the whole keyspace" } else { "" },
        human(sampled_bytes),
        if shown.is_empty() { "none".into() } else { shown.join(", ") }
    );
    let keys: Vec<Value> =
        sized.into_iter().map(|(key, bytes)| json!({ "key": key, "bytes": bytes, "human": human(bytes) })).collect();
    Ok(Finding {
        summary,
        output: json!({ "sampled": sampled, "complete": complete, "sampled_bytes": sampled_bytes, "keys": keys }),
    })
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPolicy {
    pub policy: String,
}

impl SetPolicy {
    pub fn checked(self) -> Result<Self, String> {
        if !POLICIES.contains(&self.policy.as_str()) {
            return Err(format!("policy `{}` is not one of {}", self.policy, POLICIES.join(", ")));
        }
        Ok(self)
    }
}

pub async fn set_policy(ctx: &mut Ctx, args: &SetPolicy) -> Result<Finding, TargetError> {
    let before = info(ctx, "memory").await?.get("maxmemory_policy").cloned().unwrap_or_default();
    if before == args.policy {
        return Ok(Finding {
            summary: format!("maxmemory-policy is already {before}"),
            output: json!({ "before": before, "after": before, "changed": false }),
        });
    }
    let conn = ctx.redis().await?;
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg(&args.policy)
        .query_async(conn)
        .await
        .map_err(failed)?;
    let after = info(ctx, "memory").await?.get("maxmemory_policy").cloned().unwrap_or_default();
    Ok(Finding {
        summary: format!("maxmemory-policy {before} → {after}"),
        output: json!({ "before": before, "after": after, "changed": before != after }),
    })
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetMaxmemory {
    #[serde(deserialize_with = "byte_size")]
    pub bytes: u64,
    /// Lowering the limit evicts (or refuses writes); only when asked.
    #[serde(default)]
    pub allow_lower: bool,
}

impl SetMaxmemory {
    pub fn checked(self) -> Result<Self, String> {
        if self.bytes < 1024 * 1024 {
            return Err(format!("bytes {} is below 1mb; 0 (no limit) is not offered either", self.bytes));
        }
        Ok(self)
    }
}

fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Number(n) => Ok(n),
        Raw::Text(s) => parse_bytes(&s).map_err(serde::de::Error::custom),
    }
}

/// Redis's memory units: `1k` is 1000, `1kb` 1024, and so on up to `gb`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("`{text}` is not a size like 512mb or 2gb"))?;
    let factor: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        other => return Err(format!("unknown unit `{other}` in `{text}` (use b, k, kb, m, mb, g or gb)")),
    };
    n.checked_mul(factor).ok_or_else(|| format!("`{text}` is too large"))
}

pub async fn set_maxmemory(ctx: &mut Ctx, args: &SetMaxmemory) -> Result<Finding, TargetError> {
    let info = info(ctx, "memory").await?;
    let used = int(&info, "used_memory")?;
    let before = int(&info, "maxmemory")?;
    let unchanged = |why: String| Finding {
        summary: why,
        output: json!({ "before": before, "after": before, "changed": false, "used_bytes": used }),
    };
    if before == args.bytes {
        return Ok(unchanged(format!("maxmemory is already {}", human(before))));
    }
    let lowering = before == 0 || args.bytes < before;
    if lowering && !args.allow_lower {
        let current = if before == 0 { "unlimited".to_string() } else { human(before) };
        return Ok(unchanged(format!(
            "maxmemory is {current}, not below {}: left as it is (allow_lower: true lowers it)",
            human(args.bytes)
        )));
    }
    if args.bytes <= used {
        return Err(TargetError::failed(format!(
            "refused: maxmemory {} is not above used memory {}; Redis would evict or refuse writes at once",
            human(args.bytes),
            human(used)
        )));
    }
    let conn = ctx.redis().await?;
    let () =
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(args.bytes).query_async(conn).await.map_err(failed)?;
    let after = int(&self::info(ctx, "memory").await?, "maxmemory")?;
    Ok(Finding {
        summary: format!("maxmemory {} → {} (used {})", human(before), human(after), human(used)),
        output: json!({ "before": before, "after": after, "changed": before != after, "used_bytes": used }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_redis_units() {
        assert_eq!(parse_bytes("2gb"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_bytes("512MB"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_bytes("1k"), Ok(1000));
        assert_eq!(parse_bytes("1048576"), Ok(1_048_576));
        assert!(parse_bytes("2 tb").is_err());
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999999gb").is_err());
    }

    #[test]
    fn a_limit_below_a_megabyte_or_zero_is_refused_at_parse_time() {
        assert!(SetMaxmemory { bytes: 0, allow_lower: false }.checked().is_err());
        assert!(SetMaxmemory { bytes: 2 * 1024 * 1024, allow_lower: false }.checked().is_ok());
    }

    #[test]
    fn only_real_policies_are_accepted() {
        assert!(SetPolicy { policy: "volatile-lru".into() }.checked().is_ok());
        assert!(SetPolicy { policy: "lru".into() }.checked().unwrap_err().contains("volatile-ttl"));
    }

    #[test]
    fn info_sections_and_sizes_read_like_redis_cli() {
        let info = parse_info("# Memory\r\nused_memory:1536\r\nmaxmemory_policy:noeviction\r\n");
        assert_eq!(info["used_memory"], "1536");
        assert_eq!(info["maxmemory_policy"], "noeviction");
        assert_eq!(human(1536), "1.50K");
        assert_eq!(human(12), "12B");
        assert_eq!(glob_prefix("a*b["), "a\\*b\\[*");
    }
}
