//! Starting a server inside this process (tests, examples, benchmarks).

use exchange_core::{Error, Exchange, Result};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{HttpExchangeServer, ServerConfig};
use crate::client::HttpExchange;

/// A server running in this process; stopped when dropped.
#[derive(Debug)]
pub struct SpawnedServer {
    url: String,
    client: HttpExchange,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
}

/// Starts a server with in-memory storage and no authentication on `127.0.0.1` (a free port),
/// waits until it answers, and returns it with a connected client.
///
/// # Errors
/// If the server cannot start or does not answer.
pub async fn spawn_http_exchange() -> Result<SpawnedServer> {
    let config = ServerConfig { port: 0, ..ServerConfig::default() };
    spawn_server(HttpExchangeServer::new(config)?).await
}

/// Starts a configured server in this process (bind, serve, connect a client).
///
/// # Errors
/// If the server cannot start or does not answer.
pub async fn spawn_server(server: HttpExchangeServer) -> Result<SpawnedServer> {
    let bound = server.bind().await?;
    let url = bound.url();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async move {
        let _ = stopped.await;
    }));
    let client = HttpExchange::new(&url, crate::HttpOptions::default())?;
    // Any answer proves the server is up (an authenticating server refuses this client).
    match client.status(&exchange_core::UserId::new(None).into()).await {
        Ok(_) | Err(Error::Unauthorized { .. } | Error::Forbidden { .. }) => {}
        Err(e) => return Err(e),
    }
    Ok(SpawnedServer { url, client, stop: Some(stop), task: Some(task) })
}

impl SpawnedServer {
    /// Base URL of the server.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client connected to the server.
    pub fn client(&self) -> &HttpExchange {
        &self.client
    }

    /// Stops the server gracefully and waits for it to finish.
    ///
    /// # Errors
    /// If the server failed while running.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
