//! The HTTP transport against our own server (in-memory storage): the conformance suite, a
//! replay of every Academy capture in `fixtures/academy-1.0.0/http`, and bad-input tests.

use std::sync::Arc;

use async_trait::async_trait;
use exchange_conformance::TestBackend;
use exchange_core::Exchange;
use exchange_http::HttpExchange;
use exchange_http::server::{SpawnedServer, spawn_http_exchange};

/// A fresh server per test; every client is a new connection pool.
struct HttpBackend {
    server: SpawnedServer,
}

impl HttpBackend {
    async fn start() -> Self {
        HttpBackend { server: spawn_http_exchange().await.expect("start the HTTP exchange server") }
    }
}

#[async_trait]
impl TestBackend for HttpBackend {
    async fn client(&self) -> Arc<dyn Exchange> {
        Arc::new(HttpExchange::connect(self.server.url()).await.expect("connect to the HTTP exchange"))
    }
}

exchange_conformance::conformance_tests!(HttpBackend::start());
