//! HTTP backend: Academy-compatible server and client. Work in progress: see the HTTP issue.
