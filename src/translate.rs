//! Placeholder until the translation modules land (same interface).
use serde_json::Value;

#[derive(Debug, Default, Clone)]
pub struct ToolMap {
    _private: (),
}

pub mod request {
    pub fn to_chat(_req: &super::Value) -> Result<(super::Value, super::ToolMap), String> {
        Err("UPSTREAM_API=chat: translation is not built yet".into())
    }
}

pub mod events {
    pub struct Ids;
    impl Ids {
        pub fn new(_seed: u64) -> Ids {
            Ids
        }
    }
    pub struct Synthesis {
        pub stream: Vec<u8>,
        pub response: super::Value,
    }
    pub fn to_responses(_: &[&[u8]], _: &super::ToolMap, _: &super::Value, _: &mut Ids) -> Synthesis {
        Synthesis { stream: Vec::new(), response: super::Value::Null }
    }
}
