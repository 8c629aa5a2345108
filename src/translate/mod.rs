//! The adapter between the two wire APIs: a Responses client (Codex) on a server that only
//! speaks Chat Completions.
//!
//! Two pure translations, no I/O, no clock, no randomness of their own: `request::to_chat`
//! turns the client's Responses request into a chat request (and a `ToolMap` of the tool names
//! it used); `events::to_responses` turns the complete, already checked chat answer into the
//! Responses stream (and `response` object) the client expects. The shield's buffering, checks
//! and retries run on the chat side, unchanged, in between.

pub mod events;
pub mod request;
pub mod tools;

pub use tools::{Tool, ToolKind, ToolMap};
