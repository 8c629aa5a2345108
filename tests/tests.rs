//! Integration tests: one crate, a real `codex-shield` process in front of a scripted mock.

mod support;

mod faults;
mod lifecycle;
mod routes;
