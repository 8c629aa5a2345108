//! Integration tests: one crate, a real `codex-shield` process in front of a scripted mock.

mod support;

mod adapter;
mod codex;
mod failover;
mod faults;
mod fuzz;
mod hostile;
mod lifecycle;
mod memory;
mod monitoring;
mod routes;
mod tls;
mod translate;
