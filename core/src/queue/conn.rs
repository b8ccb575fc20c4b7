//! One connection type for a single Redis node and for a Redis Cluster.
//!
//! `REDIS_URL=redis://host:port` is one node, through a reconnecting
//! [`ConnectionManager`]. `REDIS_URL=redis+cluster://host:port,host:port,…`
//! (any of the cluster's nodes; `user:password@` before the first applies to
//! all) is a cluster, through the crate's async cluster client: it learns
//! the slot map from the seeds, follows `MOVED`/`ASK`, and refreshes the map
//! by itself when a master fails over. Every script's keys share one hash
//! tag (see `keys.rs`), so each call lands on one node.

use std::time::Duration;

use redis::{
    Cmd, Pipeline, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    cluster_routing::{MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr},
};

/// How long one attempt may wait: fail fast while a node is away instead of
/// queueing requests behind reconnects (the callers have fallbacks).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest a write waits for a replica (see [`Conn::replicated`]).
const REPLICATION_WAIT: Duration = Duration::from_millis(50);

/// A key's cluster slot: CRC16 (XMODEM) of its hash tag (or of the whole
/// key without one), modulo 16384, as Redis computes it.
pub(super) fn key_slot(key: &[u8]) -> u16 {
    let tag = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| key[open + 1..].iter().position(|b| *b == b'}').map(|len| &key[open + 1..open + 1 + len]))
        .filter(|tag| !tag.is_empty())
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for byte in tag {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16384
}

#[derive(Clone)]
pub enum Conn {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

const CLUSTER_SCHEME: &str = "redis+cluster://";

/// The seed node URLs of a `redis+cluster://` URL, or `None` for any other URL.
pub fn cluster_seeds(url: &str) -> Option<Result<Vec<String>, String>> {
    let rest = url.strip_prefix(CLUSTER_SCHEME)?;
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let hosts = hosts.trim_end_matches('/');
    let seeds: Vec<String> =
        hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).map(|h| format!("redis://{auth}{h}")).collect();
    if seeds.is_empty() {
        return Some(Err("a redis+cluster:// URL names at least one host:port".into()));
    }
    if let Some(bad) =
        hosts.split(',').map(str::trim).find(|h| h.rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_err()))
    {
        return Some(Err(format!("`{bad}` in the redis+cluster:// URL is not host:port")));
    }
    Some(Ok(seeds))
}

impl Conn {
    pub async fn open(url: &str) -> RedisResult<Self> {
        match cluster_seeds(url) {
            Some(seeds) => {
                let seeds = seeds.map_err(|m| {
                    redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "bad REDIS_URL", m))
                })?;
                let client = ClusterClient::builder(seeds)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    // A failover takes the cluster's node timeout and more;
                    // a request does not wait it out (see `RedisQueue::gate`).
                    .overall_response_timeout(Some(RESPONSE_TIMEOUT * 2))
                    .retries(2)
                    .min_retry_wait(50)
                    .max_retry_wait(400)
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
            None => {
                let client = redis::Client::open(url)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Ok(Conn::Node(ConnectionManager::new_with_config(client, config).await?))
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// Cluster only: waits (at most [`REPLICATION_WAIT`]) until a replica of
    /// `key`'s master has every write sent to it so far. Replication is
    /// asynchronous: a master killed right after admitting a batch or
    /// placing a user would otherwise hand its replica a line without them,
    /// and they would be told their place expired. A master without a
    /// replica costs the wait. A slow replica must not stop the sale, so the
    /// write stands either way; the answer says whether a replica confirmed
    /// it (`true` on a single node), for `redis_replication_unconfirmed_total`.
    pub async fn replicated(&mut self, key: &str) -> bool {
        let Conn::Cluster(c) = self else { return true };
        let route = Route::new(key_slot(key.as_bytes()), SlotAddr::Master);
        let wait = redis::cmd("WAIT").arg(1).arg(REPLICATION_WAIT.as_millis() as u64).to_owned();
        let answer = c.route_command(wait, RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route))).await;
        matches!(answer.ok().and_then(|v| redis::from_redis_value::<i64>(v).ok()), Some(n) if n >= 1)
    }

    /// `INFO` of every master, by address (one entry, `single`, for a single node).
    pub async fn info_per_master(&mut self) -> RedisResult<Vec<(String, String)>> {
        match self {
            Conn::Node(c) => Ok(vec![(String::from("single"), redis::cmd("INFO").query_async(c).await?)]),
            Conn::Cluster(c) => {
                let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                let value = c.route_command(redis::cmd("INFO"), routing).await?;
                let pairs: Vec<(String, String)> = redis::from_redis_value(value)?;
                Ok(pairs)
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{cluster_seeds, key_slot};

    #[test]
    fn key_slots_are_redis_clusters() {
        // The examples of the Redis Cluster specification and CLUSTER KEYSLOT.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"123456789"), 0x31C3, "CRC16/XMODEM of the check string");
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_ne!(
            key_slot(b"foo{}{bar}"),
            key_slot(b"bar"),
            "an empty first tag hashes the whole key, not the second tag"
        );
    }

    #[test]
    fn a_cluster_url_names_its_seed_nodes() {
        assert_eq!(cluster_seeds("redis://127.0.0.1:6379"), None);
        assert_eq!(
            cluster_seeds("redis+cluster://127.0.0.1:7001, 127.0.0.1:7002/"),
            Some(Ok(vec!["redis://127.0.0.1:7001".into(), "redis://127.0.0.1:7002".into()]))
        );
        assert_eq!(
            cluster_seeds("redis+cluster://:pw@h1:7001,h2:7002"),
            Some(Ok(vec!["redis://:pw@h1:7001".into(), "redis://:pw@h2:7002".into()]))
        );
        assert!(matches!(cluster_seeds("redis+cluster://"), Some(Err(_))));
        assert!(matches!(cluster_seeds("redis+cluster://h1:7001,h2"), Some(Err(m)) if m.contains("`h2`")));
    }
}
