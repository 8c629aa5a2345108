//! The adapter between the two wire APIs: a Responses client (Codex) on a server that only
//! speaks Chat Completions, and a chat client on a server that only speaks Responses.
//!
//! Two pure translations, no I/O, no clock, no randomness of their own: `request::to_chat`
//! turns the client's Responses request into a chat request (and a `ToolMap` of the tool names
//! it used); `events::to_responses` turns the complete, already checked chat answer into the
//! Responses stream (and `response` object) the client expects. The shield's buffering, checks
//! and retries run on the chat side, unchanged, in between. The other way,
//! `chat_request::responses_body` and `chat_answer::to_chat` do the same for a chat client on
//! a Responses-only upstream, the shield working on the Responses side.

pub mod chat_answer;
pub mod chat_request;
pub mod events;
pub mod request;
pub mod tools;

pub use tools::{Tool, ToolKind, ToolMap};
