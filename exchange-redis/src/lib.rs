//! Redis backend (Academy 1.x key layout). Work in progress: see the Redis issue.
