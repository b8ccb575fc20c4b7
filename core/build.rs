// `sqlx::migrate!` embeds core/migrations at compile time; without this a
// new migration file leaves the crate (and the binary's schema) as it was
// until some Rust source changes. This is sqlx's documented build script.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
