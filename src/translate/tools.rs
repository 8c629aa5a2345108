//! Tool names between the two APIs: a Responses tool (maybe inside a namespace, maybe a custom
//! freeform tool) gets one chat function name, and the `ToolMap` turns that name back.
//!
//! Chat function names must match `^[a-zA-Z0-9_-]{1,64}$`. A plain valid name is kept as it
//! is; a namespaced one becomes `namespace__name`; anything invalid, too long or already taken
//! becomes a sanitised prefix plus a 10-hex-digit hash of the original pair, so two tools never
//! share a name however long or alike theirs are. The map, not the name's spelling, is what
//! reverses the flattening. Codex's default namespace `functions` is transparent: its tools keep
//! their short names (Codex accepts the calls with or without the namespace).

use std::collections::HashMap;

use crate::hash::Fnv;

/// How a tool's call comes back to a Responses client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolKind {
    /// A `function_call` item with JSON `arguments`.
    Function,
    /// A `custom_tool_call` item with free-form `input` (Codex's `apply_patch`).
    Custom,
    /// A `tool_search_call` item with JSON `arguments`: Codex's client-executed tool search,
    /// behind which it defers MCP tools for the models it knows.
    ToolSearch,
}

/// One tool as the Responses client named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    pub namespace: Option<String>,
    pub name: String,
    pub kind: ToolKind,
}

/// Chat function name → the client's tool, for the tools of one request.
///
/// Compact, because a request may bring tens of thousands of tools: each tool once, its chat
/// name only when it differs from its own, and two indexes by 64-bit hash (a hash shared by
/// two names, which practically never happens, falls back to a search through the tools).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolMap {
    /// The tools, in the order they were added.
    tools: Vec<Tool>,
    /// Each tool's chat name, when it is not its own name.
    renamed: Vec<Option<Box<str>>>,
    /// Hash of a chat name → the first tool with a chat name of that hash.
    by_chat: HashMap<u64, u32>,
    /// Hash of a (namespace, name) pair → the first tool with a pair of that hash.
    by_tool: HashMap<u64, u32>,
}

/// The namespace Codex puts its own tools in; its tools keep their short names.
const DEFAULT_NAMESPACE: &str = "functions";
const MAX_NAME: usize = 64;

impl ToolMap {
    /// Register a tool and return its chat name (the same name if it was registered before).
    pub fn add(&mut self, namespace: Option<&str>, name: &str, kind: ToolKind) -> String {
        if let Some(i) = self.find_tool(namespace, name) {
            return self.chat(i).to_string();
        }
        let mut chat = preferred(namespace, name);
        let mut salt = 0u32;
        while !valid(&chat) || self.find_chat(&chat).is_some() {
            chat = hashed(namespace, name, salt);
            salt += 1;
        }
        let i = self.tools.len() as u32;
        self.by_chat.entry(chat_hash(&chat)).or_insert(i);
        self.by_tool.entry(tool_hash(namespace, name)).or_insert(i);
        self.renamed.push((chat != name).then(|| chat.clone().into_boxed_str()));
        self.tools.push(Tool { namespace: namespace.map(str::to_string), name: name.to_string(), kind });
        chat
    }

    /// The client's tool behind a chat function name.
    pub fn get(&self, chat_name: &str) -> Option<&Tool> {
        self.find_chat(chat_name).map(|i| &self.tools[i])
    }

    /// The chat name of a tool named in the history (a call the model made earlier). A tool
    /// that is no longer offered gets the name it would have had, without registering it.
    pub fn chat_name(&self, namespace: Option<&str>, name: &str) -> String {
        match self.find_tool(namespace, name) {
            Some(i) => self.chat(i).to_string(),
            None => {
                let chat = preferred(namespace, name);
                if valid(&chat) {
                    chat
                } else {
                    hashed(namespace, name, 0)
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    fn chat(&self, i: usize) -> &str {
        self.renamed[i].as_deref().unwrap_or(&self.tools[i].name)
    }

    fn find_chat(&self, chat: &str) -> Option<usize> {
        let first = *self.by_chat.get(&chat_hash(chat))? as usize;
        match self.chat(first) == chat {
            true => Some(first),
            false => (0..self.tools.len()).find(|&i| self.chat(i) == chat),
        }
    }

    fn find_tool(&self, namespace: Option<&str>, name: &str) -> Option<usize> {
        let is = |t: &Tool| t.namespace.as_deref() == namespace && t.name == name;
        let first = *self.by_tool.get(&tool_hash(namespace, name))? as usize;
        match is(&self.tools[first]) {
            true => Some(first),
            false => self.tools.iter().position(is),
        }
    }
}

fn chat_hash(chat: &str) -> u64 {
    let mut hash = Fnv::default();
    hash.write(chat.as_bytes());
    hash.finish()
}

fn tool_hash(namespace: Option<&str>, name: &str) -> u64 {
    let mut hash = Fnv::default();
    match namespace {
        Some(ns) => hash.write(ns.as_bytes()),
        None => hash.write(&[0xfe]), // `None` and `Some("")` are different tools
    }
    hash.write(&[0xff]);
    hash.write(name.as_bytes());
    hash.finish()
}

/// The readable name: `name`, or `namespace__name` (Codex's MCP namespaces already end in `__`).
fn preferred(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        None | Some("") | Some(DEFAULT_NAMESPACE) => name.to_string(),
        Some(ns) if ns.ends_with("__") => format!("{ns}{name}"),
        Some(ns) => format!("{ns}__{name}"),
    }
}

/// Whether a chat server accepts this function name.
pub fn valid(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A sanitised, truncated readable name with a hash of the exact original pair appended.
fn hashed(namespace: Option<&str>, name: &str, salt: u32) -> String {
    let mut hash = Fnv::default();
    hash.write(namespace.unwrap_or("").as_bytes());
    hash.write(&[0xff]); // no namespace/name split can collide with another
    hash.write(name.as_bytes());
    hash.write(&salt.to_le_bytes());
    let suffix = format!("_{:010x}", hash.finish() & 0xff_ffff_ffff);
    let readable: String = preferred(namespace, name)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .take(MAX_NAME - suffix.len())
        .collect();
    format!("{readable}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let long = "x".repeat(70);
        let cases: &[(Option<&str>, &str, &str)] = &[
            (None, "shell", "shell"),
            (Some("functions"), "exec", "exec"),
            (Some("clock"), "sleep", "clock__sleep"),
            (Some("mcp__files__"), "read", "mcp__files__read"),
            (None, "has.dot", "has_dot_e64b6a3947"),
            (None, &long, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx_e8dfb87d8e"),
        ];
        for (ns, name, expected) in cases {
            let mut map = ToolMap::default();
            let chat = map.add(*ns, name, ToolKind::Function);
            assert_eq!(chat, *expected, "{ns:?} {name}");
            assert!(valid(&chat), "{chat}");
            let tool = map.get(&chat).unwrap();
            assert_eq!((tool.namespace.as_deref(), tool.name.as_str()), (*ns, *name));
            assert_eq!(map.chat_name(*ns, name), chat);
        }
    }

    #[test]
    fn collisions_get_distinct_names_that_map_back() {
        let long_a = format!("{}a", "n".repeat(80));
        let long_b = format!("{}b", "n".repeat(80));
        let tools: &[(Option<&str>, &str)] = &[
            (None, "a__b"),
            (Some("a"), "b"),
            (Some("a_"), "_b"),
            (Some("srv"), &long_a),
            (Some("srv"), &long_b),
            (None, "exec"),
            (Some("functions"), "exec"),
        ];
        let mut map = ToolMap::default();
        let names: Vec<String> = tools.iter().map(|(ns, n)| map.add(*ns, n, ToolKind::Custom)).collect();
        for (i, (ns, name)) in tools.iter().enumerate() {
            assert!(valid(&names[i]), "{}", names[i]);
            assert!(!names[..i].contains(&names[i]), "{} reused", names[i]);
            let tool = map.get(&names[i]).unwrap();
            assert_eq!((tool.namespace.as_deref(), tool.name.as_str()), (*ns, *name));
        }
        assert_eq!(names[0], "a__b");
        assert_ne!(names[1], "a__b");
    }

    /// Names whose hashes collide still map both ways (the fallback search).
    #[test]
    fn hash_collisions_fall_back_to_a_search() {
        let mut map = ToolMap::default();
        let a = map.add(None, "a", ToolKind::Function);
        // Point both indexes of other names at tool 0, as a colliding hash would.
        map.by_chat.insert(chat_hash("b"), 0);
        map.by_tool.insert(tool_hash(Some("ns"), "b"), 0);
        assert_eq!(map.get("b"), None);
        assert_eq!(map.chat_name(Some("ns"), "b"), "ns__b");
        let b = map.add(Some("ns"), "b", ToolKind::Custom);
        assert_eq!((a.as_str(), b.as_str()), ("a", "ns__b"));
        assert_eq!(map.get("ns__b").map(|t| (t.name.as_str(), t.kind)), Some(("b", ToolKind::Custom)));
        assert_eq!(map.add(Some("ns"), "b", ToolKind::Function), "ns__b", "registered once");
        assert_eq!(map.get("a").map(|t| t.name.as_str()), Some("a"));
        assert_eq!(map.tools.len(), 2);
    }

    #[test]
    fn validity() {
        let cases = [("a", true), ("A-z_0", true), ("", false), ("a b", false), ("é", false)];
        for (name, ok) in cases {
            assert_eq!(valid(name), ok, "{name}");
        }
        assert!(valid(&"a".repeat(64)) && !valid(&"a".repeat(65)));
    }
}
