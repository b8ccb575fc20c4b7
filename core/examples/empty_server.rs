//! The benchmark's reference point: an axum server whose handler does
//! nothing, on the same runtime and router shape as the booking service.
//! `cargo run --release --example empty_server -- 127.0.0.1:18090`

use axum::{Router, routing::get};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18090".into());
    let app = Router::new().route(
        "/v1/queue/tokens/current",
        get(|| async { axum::Json(serde_json::json!({ "status": "ACTIVE", "position": 0 })) }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}
