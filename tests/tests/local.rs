//! The conformance suite against the in-process exchange.

exchange_conformance::conformance_tests!(exchange_conformance::LocalBackend::start());
