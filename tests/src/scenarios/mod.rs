//! One async function per behaviour of the spec's conformance checklist (§6), each generic
//! over the backend. Names follow Academy's `tests/unit/exchange/transport_test.py` where one
//! exists.

mod delivery;
mod discover;
mod lifecycle;
mod observe;

pub use delivery::*;
pub use discover::*;
pub use lifecycle::*;
pub use observe::*;
