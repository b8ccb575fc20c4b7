//! The `booking` binary's own commands on real processes: what `serve` does
//! when it cannot bind. Each test runs in a scratch directory of its own.

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use testkit::TempDir;

/// Runs `booking <args>` in `dir` with `env`, and none of the caller's
/// booking settings; kills it if it has not exited within 60 s.
fn booking(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_booking"))
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("BOOKING_LISTEN")
        .env("OTEL_SDK_DISABLED", "true")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("booking binary starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("booking runs").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("booking {args:?} did not exit: {:?}", child.wait_with_output());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("booking output")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn serve_that_cannot_bind_names_the_address_and_leaves_no_database() {
    let dir = TempDir::new("booking-bind");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to hold");
    let addr = taken.local_addr().unwrap().to_string();
    let output = booking(&dir, &["serve"], &[("BOOKING_LISTEN", &addr)]);
    let err = stderr(&output);
    assert!(!output.status.success(), "{err}");
    assert!(err.contains(&format!("listening on {addr} (BOOKING_LISTEN): Address already in use")), "{err}");
    assert_eq!(err.matches("Address already in use").count(), 1, "the cause is printed once: {err}");
    let left: Vec<_> = std::fs::read_dir(&*dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "a failed start leaves nothing behind: {left:?}");
}
