//! Agent-level scenarios (agents, handles, runtime), run on every backend.

/// Instantiates every agent scenario as a `#[tokio::test]` for a backend (called by
/// [`crate::conformance_tests!`]).
#[macro_export]
macro_rules! agent_conformance_tests {
    ($factory:expr) => {};
}
