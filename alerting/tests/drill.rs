//! The README's first hour on real processes: `scripts/run.sh` starts the
//! whole platform or nothing, and `scripts/drill.sh` runs the chaos drill
//! against it as written (chaos on with traffic, the page, the ack, the
//! runbook with `--apply --yes`, the resolve), each stage within its limit.
//! The binaries are this test run's own (`RUN_BIN_DIR`), so nothing is built.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use testkit::{TempDir, free_port, workspace_binary};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn bin_dir() -> PathBuf {
    workspace_binary("alerting").parent().unwrap().to_path_buf()
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// `scripts/run.sh` in `dir`, its output (pages included) in `dir/out.txt`.
fn run_sh(dir: &TempDir, booking: u16, alerting: u16) -> Command {
    let mut cmd = Command::new(repo().join("scripts/run.sh"));
    cmd.env("RUN_DIR", &dir.0)
        .env("RUN_BIN_DIR", bin_dir())
        .env("BOOKING_LISTEN", format!("127.0.0.1:{booking}"))
        .env("ALERTING_LISTEN", format!("127.0.0.1:{alerting}"))
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("ALERTING_DATABASE_URL");
    cmd
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn run_sh_with_a_port_taken_starts_nothing_and_names_the_port_and_the_setting() {
    let dir = TempDir::new("run-sh-taken");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let alerting = taken.local_addr().unwrap().port();
    let booking = free_port();
    let out = run_sh(&dir, booking, alerting).output().unwrap();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains(&format!("127.0.0.1:{alerting} is taken")) && said.contains("ALERTING_LISTEN"), "{said}");
    assert!(said.contains("Nothing was started"), "{said}");
    assert!(!listening(booking), "booking must not be left running");
    assert!(!dir.path("booking.db").exists() && !dir.path("alerting.db").exists(), "no data made: {said}");
}

#[test]
fn run_sh_stops_booking_when_the_alerting_service_fails_to_start() {
    let dir = TempDir::new("run-sh-half");
    let (booking, alerting) = (free_port(), free_port());
    let out = run_sh(&dir, booking, alerting).env("ALERTING_RULES", dir.path("no-such-rules.yaml")).output().unwrap();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("alerting failed to start") && said.contains("no-such-rules.yaml"),
        "says why, from the log: {said}"
    );
    assert!(said.contains("stopping everything"), "{said}");
    assert!(!listening(booking) && !listening(alerting), "nothing left running: {said}");
    assert!(!said.contains("The platform is up"), "{said}");
}

/// run.sh, stopped with SIGTERM (and so its children) when dropped.
struct Platform {
    child: Child,
    dir: TempDir,
    booking: u16,
    alerting: u16,
}

impl Platform {
    fn start() -> Self {
        let dir = TempDir::new("run-sh-drill");
        let (booking, alerting) = (free_port(), free_port());
        let out = std::fs::File::create(dir.path("out.txt")).unwrap();
        let child = run_sh(&dir, booking, alerting).stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap();
        let platform = Self { child, dir, booking, alerting };
        let started = Instant::now();
        while !platform.out().contains("The platform is up") {
            assert!(started.elapsed() < Duration::from_secs(60), "run.sh did not come up: {}", platform.out());
            std::thread::sleep(Duration::from_millis(100));
        }
        platform
    }

    fn out(&self) -> String {
        std::fs::read_to_string(self.dir.path("out.txt")).unwrap_or_default()
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        self.child.wait().unwrap()
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

#[test]
fn the_readme_drill_passes_against_run_sh_with_one_page_and_one_resolve() {
    let mut platform = Platform::start();
    let said = platform.out();
    assert!(said.contains(&format!("log {}", platform.dir.path("logs/booking.log").display())), "{said}");

    let started = Instant::now();
    let drill = Command::new(repo().join("scripts/drill.sh"))
        .env("BOOKING_URL", format!("http://127.0.0.1:{}", platform.booking))
        .env("ALERTING_URL", format!("http://127.0.0.1:{}", platform.alerting))
        .env("DRILL_BIN_DIR", bin_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let report = text(&drill);
    eprintln!("{report}");
    assert!(
        drill.status.success(),
        "the drill failed after {} s:\n{report}\nrun.sh:\n{}",
        started.elapsed().as_secs(),
        platform.out()
    );
    for stage in ["fault", "pending", "page", "ack", "mitigated", "resolved"] {
        assert!(
            report.lines().any(|l| l.trim_start().starts_with(stage) && l.contains(" s ")),
            "stage {stage} timed: {report}"
        );
    }
    assert!(report.contains("drill passed"), "{report}");

    // The pages came to run.sh's terminal, apart from the logs; their links
    // and commands work as printed.
    let pages = platform.out();
    assert_eq!(pages.matches("[CRITICAL] HighErrorRate firing").count(), 1, "one page:\n{pages}");
    assert_eq!(pages.matches("[RESOLVED] HighErrorRate").count(), 1, "one resolve:\n{pages}");
    let titles = pages.lines().filter(|l| l.starts_with("[CRITICAL]") || l.starts_with("[WARNING]")).count();
    assert_eq!(titles, 1, "nothing else paged:\n{pages}");
    assert!(!pages.contains("\"level\""), "no log line among the pages:\n{pages}");
    assert!(!pages.contains("Dashboard:"), "no Grafana runs, so no dashboard link:\n{pages}");
    let field = |name: &str| {
        pages
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{name} in:\n{pages}"))
            .to_string()
    };
    let runbook = field("Runbook:");
    assert!(Path::new(&runbook).is_file(), "the runbook link opens on this machine: {runbook}");
    let ack = field("Acknowledge:");
    assert!(ack.starts_with(&bin_dir().join("alerting").display().to_string()), "{ack}");
    let run = field("Run runbook:");
    assert!(run.starts_with(&bin_dir().join("runbook").display().to_string()), "{run}");
    let logs = std::fs::read_to_string(platform.dir.path("logs/booking.log")).unwrap();
    assert!(logs.lines().filter(|l| l.contains("\"route\"")).count() > 100, "booking's access lines went to its log");

    let status = platform.stop();
    assert!(status.success(), "Ctrl-C (TERM) is a clean stop: {status:?}");
    let after = platform.out();
    assert!(after.contains("run.sh: stopped"), "{after}");
    assert!(
        after.starts_with(&pages) && after.matches(&"=".repeat(72)).count() == 4,
        "run.sh's own lines land after the pages, not over them:\n{after}"
    );
    assert!(!listening(platform.booking) && !listening(platform.alerting), "both stopped with it");
}
