//! The conformance suite against the Redis exchange, each test on a private `redis-server`
//! (or, with `REDIS_URL` set, on that server under a fresh namespace).

use std::sync::Arc;

use async_trait::async_trait;
use exchange_conformance::redis_server::{RedisServer, redis_url_override};
use exchange_conformance::{Quirks, TestBackend};
use exchange_core::Exchange;
use exchange_redis::RedisExchange;

/// One isolated Redis exchange.
struct RedisBackend {
    url: String,
    namespace: Option<String>,
    _server: Option<RedisServer>,
}

impl RedisBackend {
    async fn start() -> Self {
        match redis_url_override() {
            Some(url) => {
                RedisBackend { url, namespace: Some(format!("t{}", uuid::Uuid::new_v4().simple())), _server: None }
            }
            None => {
                let server = RedisServer::start();
                RedisBackend { url: server.url(), namespace: None, _server: Some(server) }
            }
        }
    }
}

#[async_trait]
impl TestBackend for RedisBackend {
    async fn client(&self) -> Arc<dyn Exchange> {
        let mut builder = RedisExchange::builder(&self.url);
        if let Some(namespace) = &self.namespace {
            builder = builder.namespace(namespace);
        }
        Arc::new(builder.connect().await.expect("connect to the test redis-server"))
    }

    fn quirks(&self) -> Quirks {
        // Academy's layout records a gravestone when an unknown id is terminated.
        Quirks::default().with_gravestone_on_unknown_terminate()
    }
}

exchange_conformance::conformance_tests!(RedisBackend::start());
