//! The conformance suite against the Redis exchange, each test on a private `redis-server`
//! (or, with `REDIS_URL` set, on that server under a fresh namespace).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use exchange_conformance::redis_server::{RedisServer, redis_url_override};
use exchange_conformance::{Quirks, TestBackend};
use exchange_core::Exchange;
use exchange_redis::RedisExchange;

/// One isolated Redis exchange.
struct RedisBackend {
    url: String,
    namespace: Option<String>,
    /// Receive one message per round trip, re-checking the mailbox every time.
    strict: bool,
    _server: Option<RedisServer>,
}

impl RedisBackend {
    /// Academy's layout and the default options.
    async fn start() -> Self {
        Self::with(None, false)
    }

    /// A namespace and strict receives: the same suite through the other option paths.
    async fn start_namespaced_strict() -> Self {
        Self::with(Some(format!("t{}", uuid::Uuid::new_v4().simple())), true)
    }

    fn with(namespace: Option<String>, strict: bool) -> Self {
        match redis_url_override() {
            Some(url) => {
                let namespace = namespace.or_else(|| Some(format!("t{}", uuid::Uuid::new_v4().simple())));
                RedisBackend { url, namespace, strict, _server: None }
            }
            None => {
                let server = RedisServer::start();
                RedisBackend { url: server.url(), namespace, strict, _server: Some(server) }
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
        if self.strict {
            builder = builder.prefetch(1).prefetch_max_age(Duration::ZERO);
        }
        Arc::new(builder.connect().await.expect("connect to the test redis-server"))
    }

    fn quirks(&self) -> Quirks {
        // Academy's layout records a gravestone when an unknown id is terminated.
        Quirks::default().with_gravestone_on_unknown_terminate()
    }
}

exchange_conformance::conformance_tests!(RedisBackend::start());

/// The suite again under a namespace, receiving one message per round trip.
mod namespaced_strict {
    use super::RedisBackend;

    exchange_conformance::conformance_tests!(RedisBackend::start_namespaced_strict());
}
