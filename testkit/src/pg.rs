//! A PostgreSQL cluster of the test's own: `initdb` in a scratch directory,
//! run by the `postgres` user on a free loopback port, for tests that must
//! stop, restart or replicate a server (never the shared one's data).

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use crate::{TempDir, free_port};

/// Stopped (immediately) and removed on drop.
pub struct PgCluster {
    pub port: u16,
    bin: PathBuf,
    dir: TempDir,
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command run as the `postgres` user (the server refuses root).
fn as_postgres(path: &std::path::Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

impl PgCluster {
    /// `initdb` (trust, user `postgres`) and start; panics with the server's
    /// log when either fails.
    pub fn start() -> Self {
        let bindir = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .expect("pg_config is installed (PostgreSQL's server package)");
        let bin = PathBuf::from(String::from_utf8_lossy(&bindir.stdout).trim());
        let dir = TempDir::new("pg-cluster");
        if is_root() {
            let owned = Command::new("chown").args(["-R", "postgres:"]).arg(&dir.0).status().expect("chown runs");
            assert!(owned.success(), "chown of {} to postgres", dir.0.display());
        }
        let cluster = Self { port: free_port(), bin, dir };
        let data = cluster.data();
        cluster.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"]);
        cluster.ctl(&["start"]);
        cluster
    }

    /// A streaming replica of this cluster: `pg_basebackup -R` into a
    /// scratch directory of its own, started on another free port.
    pub fn replica(&self) -> Self {
        let dir = TempDir::new("pg-replica");
        if is_root() {
            let owned = Command::new("chown").args(["-R", "postgres:"]).arg(&dir.0).status().expect("chown runs");
            assert!(owned.success(), "chown of {} to postgres", dir.0.display());
        }
        let replica = Self { port: free_port(), bin: self.bin.clone(), dir };
        let (port, data) = (self.port.to_string(), replica.data());
        replica.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                "--no-sync",
                "--checkpoint=fast",
            ],
        );
        replica.ctl(&["start"]);
        replica
    }

    fn data(&self) -> String {
        self.dir.path("data").display().to_string()
    }

    /// Runs a server binary as the `postgres` user; panics on failure.
    fn run(&self, tool: &str, args: &[&str]) {
        let path = self.bin.join(tool);
        let out = as_postgres(&path)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
        let log = std::fs::read_to_string(self.dir.path("server.log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}\n{log}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl <action>`, waiting for it to finish.
    fn ctl(&self, action: &[&str]) {
        let options =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.0.display());
        let data = self.data();
        let log = self.dir.path("server.log").display().to_string();
        let mut args = vec!["-D", data.as_str(), "-l", log.as_str(), "-o", options.as_str(), "-w", "-t", "60"];
        args.extend_from_slice(action);
        self.run("pg_ctl", &args);
    }

    /// A URL of database `db` on this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Stops (fast: sessions are cut) and starts again on the same port.
    pub fn restart(&self) {
        self.ctl(&["-m", "fast", "restart"]);
    }

    pub fn stop(&self) {
        self.ctl(&["-m", "fast", "stop"]);
    }

    pub fn start_again(&self) {
        self.ctl(&["start"]);
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("server.log")).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-D", &data, "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
