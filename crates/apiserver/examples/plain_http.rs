//! The API server core over plain HTTP with an embedded SQLite store, without TLS or authentication: for
//! poking at the API with `kubectl --server http://127.0.0.1:PORT` or curl while developing.
//!
//! `cargo run -p rkube-apiserver --example plain_http -- DATA_DIR [PORT]` (PORT defaults to 0 = any free).

use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(
        args.next()
            .ok_or_else(|| anyhow::anyhow!("usage: plain_http DATA_DIR [PORT]"))?,
    );
    let port: u16 = args.next().map(|p| p.parse()).transpose()?.unwrap_or(0);
    std::fs::create_dir_all(&dir)?;
    let store = rkube_store::sqlite::SqliteBackend::open(&dir.join("db"), Default::default()).await?;
    let state = rkube_apiserver::ApiState::new(Arc::new(store), Default::default()).await?;
    rkube_apiserver::bootstrap(&state).await?;
    state.set_ready();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("http://{}", listener.local_addr()?);
    axum::serve(listener, rkube_apiserver::router(state)).await?;
    Ok(())
}
