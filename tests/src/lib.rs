//! The shared conformance suite.
//!
//! Each scenario is a `pub async fn name(backend: &impl TestBackend)` in [`scenarios`]; the
//! [`conformance_tests!`] macro instantiates every one of them as its own `#[tokio::test]` for a
//! backend. Adding a transport = implementing [`TestBackend`] and one macro call:
//!
//! ```text
//! exchange_conformance::conformance_tests!(MyBackend::start());
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use exchange_core::Exchange;

pub mod agents;
pub mod fixtures;
pub mod log_capture;
pub mod python;
pub mod redis_server;
pub mod scenarios;
mod support;
pub mod tls;

/// Creates clients of one fresh, isolated exchange.
#[async_trait]
pub trait TestBackend: Send + Sync + 'static {
    /// A new client of this backend's exchange (every client sees the same mailboxes).
    async fn client(&self) -> Arc<dyn Exchange>;

    /// Documented differences from the reference semantics.
    fn quirks(&self) -> Quirks {
        Quirks::default()
    }
}

/// Where a backend differs, on purpose, from the local reference (see the spec's §6).
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct Quirks {
    /// Terminating an unknown id records a gravestone (Academy's Redis layout): afterwards the
    /// id reads as terminated instead of unknown.
    pub terminate_unknown_leaves_gravestone: bool,
}

impl Quirks {
    /// Sets [`Quirks::terminate_unknown_leaves_gravestone`].
    pub fn with_gravestone_on_unknown_terminate(mut self) -> Self {
        self.terminate_unknown_leaves_gravestone = true;
        self
    }
}

/// The in-process reference backend.
#[derive(Debug, Default)]
pub struct LocalBackend {
    exchange: exchange_local::LocalExchange,
}

impl LocalBackend {
    /// A fresh local exchange.
    pub async fn start() -> Self {
        Self::default()
    }
}

#[async_trait]
impl TestBackend for LocalBackend {
    async fn client(&self) -> Arc<dyn Exchange> {
        Arc::new(self.exchange.clone())
    }
}

/// Instantiates every scenario of [`scenarios`] as a `#[tokio::test]` for a backend.
///
/// The argument is an expression evaluating to a future of a [`TestBackend`]; it is evaluated
/// once per test, so every test gets a fresh exchange.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@instantiate $factory;
            register_user_and_agent_are_active,
            register_existing_agent_is_a_noop,
            reregister_terminated_agent_stays_terminated,
            unknown_mailbox_is_a_bad_entity,
            send_to_terminated_mailbox_fails,
            recv_on_terminated_mailbox_fails_even_with_queued_messages,
            terminate_wakes_blocked_receiver,
            terminate_is_idempotent,
            terminate_unknown_id,
            terminate_answers_pending_requests,
            recv_times_out,
            closed_mailbox_handle_stops_receiving,
            messages_are_fifo,
            concurrent_senders_lose_nothing,
            each_message_goes_to_one_receiver,
            every_body_kind_round_trips,
            unknown_body_kinds_pass_through,
            discover_matches_behaviors,
            discover_skips_terminated_agents,
            heartbeat_reports_elapsed_time,
            heartbeat_of_unknown_or_terminated_mailbox_fails,
            stats_follow_academy_formulas,
            ids_compare_by_role_and_uid,
            thousand_mailboxes_open_at_once,
            clients_share_one_exchange,
        );
        $crate::agent_conformance_tests!($factory);
    };
    (@instantiate $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let backend = $factory.await;
                $crate::scenarios::$name(&backend).await;
            }
        )*
    };
}
