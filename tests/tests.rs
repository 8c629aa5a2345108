//! Integration tests: one crate, a real `codex-shield` process in front of a scripted mock.

mod support;

mod adapter;
mod chat_on_responses;
mod chat_shapes;
mod chat_translate;
mod codex;
mod failover;
mod faults;
mod fd;
mod fuzz;
mod hostile;
mod keys;
mod lifecycle;
mod memory;
mod monitoring;
mod routes;
mod slow;
mod sticky;
mod tls;
mod translate;
mod upstream;
mod usage;
