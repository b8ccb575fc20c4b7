//! A Redis Cluster of the test's own: `redis-server` in cluster mode on free
//! loopback ports, joined by `redis-cli --cluster create`, for tests that
//! shard, fail over or count commands per node (never the shared Redis).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{Process, TempDir};

/// Killed (every node) and removed on drop.
pub struct RedisCluster {
    /// Every node's port; the first `masters` were created as masters.
    pub ports: Vec<u16>,
    nodes: Vec<Option<Process>>,
    dir: TempDir,
}

/// A port free for a node and for its cluster bus (port + 10000).
fn node_port() -> u16 {
    loop {
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 35_000) as u16;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

/// `redis-cli -p PORT ARGS…`'s output; empty when the node does not answer.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A field of an `INFO`-style `name:value` reply.
pub fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':'))).map(|v| v.trim().to_owned())
}

/// Polls `ok` every 50 ms for at most `within`; panics with `what` if it never holds.
fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl RedisCluster {
    /// `masters` masters with one replica each; returns once every node
    /// says `cluster_state:ok` and every replica is in sync. A node that
    /// cannot bind (another test took its port between the check and the
    /// bind) means a fresh try on other ports, up to three.
    pub fn start(masters: usize) -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(masters) {
                Ok(cluster) => return cluster,
                Err(why) => last = why,
            }
        }
        panic!("the Redis Cluster did not start: {last}");
    }

    fn try_start(masters: usize) -> Result<Self, String> {
        let dir = TempDir::new("redis-cluster");
        let ports: Vec<u16> = (0..masters * 2).map(|_| node_port()).collect();
        let nodes = ports
            .iter()
            .map(|port| {
                let child = Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes"])
                    .args(["--cluster-config-file", &dir.path(&format!("nodes-{port}.conf")).display().to_string()])
                    // A dead master's replica takes over after 2 s.
                    .args(["--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no"])
                    .args([
                        "--dir",
                        &dir.0.display().to_string(),
                        "--logfile",
                        &dir.path(&format!("{port}.log")).display().to_string(),
                    ])
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("redis-server runs (Debian's redis-server package)");
                Some(Process(child))
            })
            .collect();
        let mut cluster = Self { ports, nodes, dir };
        for i in 0..cluster.ports.len() {
            let port = cluster.ports[i];
            let deadline = Instant::now() + Duration::from_secs(10);
            while redis_cli(port, &["ping"]).trim() != "PONG" {
                let exited = cluster.nodes[i].as_mut().is_some_and(|n| n.0.try_wait().is_ok_and(|s| s.is_some()));
                if exited || Instant::now() > deadline {
                    return Err(format!("node {port} did not come up: {}", cluster.log(port)));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let addresses: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        cluster.wait_healthy(masters);
        Ok(cluster)
    }

    /// Waits until every live node says the cluster is ok, with `masters`
    /// masters, each with a replica in sync.
    pub fn wait_healthy(&self, masters: usize) {
        wait_until("the cluster is ok with every replica in sync", Duration::from_secs(30), || {
            self.agrees_on(masters)
                && self.masters().iter().all(|&m| {
                    let info = redis_cli(m, &["info", "replication"]);
                    info_field(&info, "connected_slaves").is_some_and(|n| n != "0") && info.contains("state=online")
                })
        });
    }

    /// Waits until the live nodes agree on `masters` live masters again,
    /// after one was killed (its replica promoted).
    pub fn wait_failed_over(&self, masters: usize) {
        wait_until("a replica took over the killed master's slots", Duration::from_secs(30), || {
            self.agrees_on(masters)
        });
    }

    /// Every live node says `cluster_state:ok`, and there are `masters` live masters.
    fn agrees_on(&self, masters: usize) -> bool {
        self.live_ports()
            .iter()
            .all(|&p| info_field(&redis_cli(p, &["cluster", "info"]), "cluster_state").as_deref() == Some("ok"))
            && self.masters().len() == masters
    }

    fn live_ports(&self) -> Vec<u16> {
        self.ports.iter().zip(&self.nodes).filter(|(_, n)| n.is_some()).map(|(p, _)| *p).collect()
    }

    /// The URL booking takes (`REDIS_URL`).
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The ports of the live masters, as the live nodes see them now.
    pub fn masters(&self) -> Vec<u16> {
        let Some(&asked) = self.live_ports().first() else { return Vec::new() };
        let mut masters: Vec<u16> = redis_cli(asked, &["cluster", "nodes"])
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .filter_map(|l| l.split_whitespace().nth(1)?.split('@').next()?.rsplit(':').next()?.parse().ok())
            .collect();
        masters.sort_unstable();
        masters
    }

    /// The master holding `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let asked = self.live_ports()[0];
        let slot: u16 = redis_cli(asked, &["cluster", "keyslot", key]).trim().parse().expect("a slot number");
        for line in
            redis_cli(asked, &["cluster", "nodes"]).lines().filter(|l| l.contains("master") && !l.contains("fail"))
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let owns = fields.iter().skip(8).any(|range| match range.split_once('-') {
                Some((a, b)) => a.parse::<u16>().is_ok_and(|a| a <= slot) && b.parse::<u16>().is_ok_and(|b| slot <= b),
                None => range.parse::<u16>() == Ok(slot),
            });
            if owns
                && let Some(port) =
                    fields[1].split('@').next().and_then(|a| a.rsplit(':').next()).and_then(|p| p.parse().ok())
            {
                return port;
            }
        }
        panic!("no master owns slot {slot} of {key}");
    }

    /// `kill -9` of one node.
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).expect("a node of this cluster");
        self.nodes[i] = None;
    }

    /// The port of `master`'s replica, as the master reports it.
    pub fn replica_of(&self, master: u16) -> u16 {
        let info = redis_cli(master, &["info", "replication"]);
        info_field(&info, "slave0")
            .and_then(|v| v.split(',').find_map(|kv| kv.strip_prefix("port=")).and_then(|p| p.parse().ok()))
            .unwrap_or_else(|| panic!("{master} reports no replica: {info}"))
    }

    /// Stops one node with SIGSTOP until the guard drops (SIGCONT): alive
    /// to the others for the cluster's node timeout (2 s), but answering
    /// nothing, as a replica stalled on a slow disk.
    pub fn pause(&self, port: u16) -> Paused {
        let i = self.ports.iter().position(|p| *p == port).expect("a node of this cluster");
        let pid = self.nodes[i].as_ref().expect("a live node").0.id();
        signal(pid, "-STOP");
        Paused(pid)
    }

    /// The node's log, for a failing test's message.
    pub fn log(&self, port: u16) -> String {
        std::fs::read_to_string(self.dir.path(&format!("{port}.log"))).unwrap_or_default()
    }
}

/// A node stopped by [`RedisCluster::pause`]; continued on drop.
pub struct Paused(u32);

impl Drop for Paused {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

fn signal(pid: u32, sig: &str) {
    let sent = Command::new("kill").args([sig, &pid.to_string()]).status().is_ok_and(|s| s.success());
    assert!(sent, "kill {sig} {pid} failed");
}
