//! What arrives from the client, turned into an endpoint-free `Job`: the inbound key and the
//! client's name (`keys.rs`), the body within its limit and the memory budget, the client
//! headers that may travel, the JSON object of a shielded route (parsed at its top level only,
//! `object.rs`).
//!
//! It reads the request and nothing else: it never writes to the client (that is
//! `client.rs`) and never chooses an upstream (that is `pool.rs`, per attempt).

use std::io::Read;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::api::Api;
use crate::codex;
use crate::config::Config;
use crate::error::Error;
use crate::keys::{self, Keys};
use crate::memory::{self, Hold};
use crate::object::{self, Object};
use crate::route::Route;

/// What the client asked for, before any upstream is chosen.
#[derive(Debug)]
pub struct Job {
    pub method: String,
    /// The client's API on a shielded route; `None` for a forwarded `/v1/...` call.
    pub api: Option<Api>,
    /// The path after `/v1` (`/responses`, `/models`...).
    pub rest: String,
    pub query: Option<String>,
    /// The client's headers that may travel upstream.
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// The client asked for a stream (`"stream": true`); otherwise it gets one JSON object.
    pub wants_stream: bool,
    /// The client is Codex CLI: it gets the answer forms Codex shows verbatim (`codex.rs`).
    pub codex: bool,
    /// The client's name from CLIENT_KEYS_FILE; `None` for PROXY_API_KEY or an open proxy.
    pub client: Option<std::sync::Arc<str>>,
    /// What the request is charged against the memory budget while it runs.
    pub hold: memory::Hold,
}

/// The client's body: a JSON object parsed at its top level on a shielded route, bytes
/// otherwise.
#[derive(Debug, Clone)]
pub enum Body {
    Json(Object),
    Raw(Vec<u8>),
}

/// Parse a shielded route's body (taking its bytes): a JSON object, parsed at its top level
/// only, and whether the client wants a stream.
pub fn parse_body(body: Vec<u8>) -> Result<(Object, bool), Error> {
    let object = Object::parse(body).map_err(|e| Error::BadRequest(e.to_string()))?;
    let wants_stream = object.is_true("stream");
    Ok((object, wants_stream))
}

/// The job for a request on `route` (a shielded or forwarded one), once its key is checked
/// (`PROXY_API_KEY`, or one of the named `keys` in effect) and its body read. Out of line, like
/// `log::request`: its frame is not under the attempts.
#[inline(never)]
pub fn job(
    config: &Config,
    keys: Option<&Keys>,
    request: &mut tiny_http::Request,
    route: Route,
    query: Option<&str>,
) -> Result<Job, Error> {
    let client = keys::check(config.proxy_key.as_deref(), keys, &Credentials::of(request))?;
    if asks_for_websocket(request) {
        return Err(Error::WebSocket);
    }
    let (api, rest) = match route {
        Route::Shielded(api, rest) => (Some(api), rest),
        Route::Forward(rest) => (None, rest),
        Route::NotFound => {
            let method = request.method().as_str().to_string();
            let path = request.url().split('?').next().unwrap_or("").to_string();
            return Err(Error::NotFound { method, path });
        }
    };
    let hold = admit(config, request, api)?;
    let raw = read_body(request, config.limits.max_request_bytes)?;
    let hold = charge_read(hold, raw.len(), cost(config, api))?;
    let mut headers = forward_headers(request);
    // Codex speaks only the Responses API: its special answer forms are for that route.
    let codex = api == Some(Api::Responses) && codex::is_codex(&headers);
    let (body, wants_stream) = match api {
        Some(_) => {
            let (object, wants_stream) = parse_body(raw)?;
            (Body::Json(standard_shape(object, &mut headers)?), wants_stream)
        }
        None => (Body::Raw(raw), false),
    };
    Ok(Job {
        method: request.method().as_str().to_string(),
        api,
        rest,
        query: query.map(str::to_string),
        headers,
        body,
        wants_stream,
        codex,
        client,
        hold,
    })
}

/// What a request costs in multiples of its body: more when it may be translated for an
/// upstream of the other API.
fn cost(config: &Config, api: Option<Api>) -> usize {
    let translates = api.is_some_and(|api| config.upstreams.iter().any(|t| t.api.exchange(api).translated()));
    match translates {
        true => memory::TRANSLATED_COST,
        false => memory::PASS_THROUGH_COST,
    }
}

/// Charge the request for its announced body before reading it; refused, its body is read
/// and dropped (so the client, still sending it, gets the 503 rather than a reset).
/// A body announced over `MAX_REQUEST_BYTES` is left to `read_body`'s 413.
fn admit(config: &Config, request: &mut tiny_http::Request, api: Option<Api>) -> Result<Hold, Error> {
    let limit = config.limits.max_request_bytes;
    let announced = request.body_length().unwrap_or(0);
    if announced as u64 > limit {
        return Ok(Hold::default());
    }
    Hold::admit(announced.saturating_mul(cost(config, api))).map_err(|overdrawn| {
        let _ = std::io::copy(&mut request.as_reader().take(limit), &mut std::io::sink());
        Error::from(overdrawn)
    })
}

/// The charge for a body whose size was not announced (chunked), now that it is read.
fn charge_read(mut hold: Hold, read: usize, cost: usize) -> Result<Hold, Error> {
    let more = (read * cost).saturating_sub(hold.bytes());
    if more > 0 {
        hold.grow(more)?;
    }
    Ok(hold)
}

/// A Codex "lite" body (tools packed in an `additional_tools` input item) in the standard
/// Responses shape that every compatible server accepts; other bodies unchanged.
///
/// `codex::normalize` works on a `Value`; it is given only what it reads and rewrites
/// (`tools`, `reasoning` and the packed items of `input`), never the whole conversation, and
/// `input` loses its packed items here, the other items kept raw.
fn standard_shape(mut object: Object, headers: &mut Vec<(String, String)>) -> Result<Object, Error> {
    let lite = headers.iter().any(|(n, v)| n == codex::LITE_HEADER && v.trim().eq_ignore_ascii_case("true"));
    let items = object.items("input");
    let packed: Vec<&RawValue> = items.iter().flatten().copied().filter(|item| is_packed(item)).collect();
    if packed.is_empty() && !lite {
        return Ok(object);
    }
    let mut partial = Map::new();
    let parse = |raw: &RawValue| serde_json::from_str::<Value>(raw.get()).unwrap_or_default();
    partial.insert("input".into(), Value::Array(packed.iter().map(|item| parse(item)).collect()));
    for key in ["tools", "reasoning"] {
        if let Some(value) = object.value(key) {
            partial.insert(key.into(), value);
        }
    }
    let mut body = Value::Object(partial);
    match codex::normalize(&mut body, headers) {
        Ok(codex::Normalized::FromLite { dropped_namespaces }) => {
            crate::debug!("a Codex lite body was put in the standard shape; dropped tool namespaces {dropped_namespaces:?}");
        }
        Ok(codex::Normalized::Standard) => {}
        Err(reason) => {
            return Err(Error::BadRequest(format!("a Codex lite body cannot be rewritten: {reason}")))
        }
    }
    if !packed.is_empty() {
        let kept: Vec<&RawValue> = items.iter().flatten().copied().filter(|item| !is_packed(item)).collect();
        let input = serde_json::to_vec(&kept).unwrap_or_default();
        drop(items);
        object.insert_raw("input", &input);
    } else {
        drop(items);
    }
    for key in ["tools", "reasoning"] {
        if let Some(value) = body.get(key) {
            object.insert(key, value);
        }
    }
    Ok(object)
}

/// Whether an input item is an `additional_tools` item (Codex's packed tools).
fn is_packed(item: &RawValue) -> bool {
    object::string_member(item.get().as_bytes(), "type").as_deref() == Some("additional_tools")
}

/// Whether the request offers to switch to WebSocket (`Upgrade: websocket`). Another offer
/// (`Upgrade: h2c` from `curl --http2`) is ignored and the request served over HTTP/1.1.
fn asks_for_websocket(request: &tiny_http::Request) -> bool {
    header_tokens(request, "upgrade").any(|t| t.eq_ignore_ascii_case("websocket"))
}

/// The comma-separated tokens of every `name` header, trimmed.
fn header_tokens<'a>(request: &'a tiny_http::Request, name: &'a str) -> impl Iterator<Item = &'a str> {
    request
        .headers()
        .iter()
        .filter(move |h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .flat_map(|h| h.value.as_str().split(','))
        .map(str::trim)
}

/// Read the client's body, refusing more than `limit` bytes, and compressed bodies: no client
/// this proxy serves compresses its requests (Codex compresses with zstd only for ChatGPT
/// sign-in against OpenAI's own backend; the openai SDKs never do), so a 415 that names the
/// coding beats a decoder and its zip-bomb limits.
fn read_body(request: &mut tiny_http::Request, limit: u64) -> Result<Vec<u8>, Error> {
    let coding = header_tokens(request, "content-encoding").find(|t| !t.eq_ignore_ascii_case("identity"));
    if let Some(coding) = coding {
        return Err(Error::UnsupportedEncoding(coding.to_string()));
    }
    if request.body_length().is_some_and(|n| n as u64 > limit) {
        return Err(Error::RequestTooLarge { limit });
    }
    // The announced length exactly (no doubling: a 23 MB body must not cost 32 + 16 MB),
    // plus one byte, so that the read that finds the end does not grow the vector.
    let mut body = Vec::with_capacity(request.body_length().map_or(1 << 16, |n| n + 1));
    request
        .as_reader()
        .take(limit + 1)
        .read_to_end(&mut body)
        .map_err(|e| Error::BadRequest(format!("cannot read the request body: {e}")))?;
    if body.len() as u64 > limit {
        return Err(Error::RequestTooLarge { limit });
    }
    if let Some(expected) = request.body_length().filter(|&n| n > body.len()) {
        let message = format!("the request body ended after {} of {expected} bytes", body.len());
        return Err(Error::BadRequest(message));
    }
    Ok(body)
}

/// Client headers that must not travel upstream: hop-by-hop ones, those the HTTP client sets
/// itself, the client's own credentials (Codex sends a placeholder key), and
/// `accept-encoding` (the checker reads the stream's bytes, so they stay uncompressed).
const NOT_FORWARDED: [&str; 17] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    "host",
    "content-length",
    "authorization",
    "api-key",
    "accept-encoding",
    "expect",
    "x-api-key",
];

/// The client's headers that travel upstream: not those above, nor those its `Connection`
/// header names as hop-by-hop (RFC 9110 §7.6.1: `Connection: Upgrade, HTTP2-Settings`).
fn forward_headers(request: &tiny_http::Request) -> Vec<(String, String)> {
    let hop: Vec<String> = header_tokens(request, "connection").map(str::to_ascii_lowercase).collect();
    request
        .headers()
        .iter()
        .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), h.value.as_str().to_string()))
        .filter(|(name, _)| !NOT_FORWARDED.contains(&name.as_str()) && !hop.contains(name))
        .collect()
}

/// What a request offers as credentials.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub bearer: Option<String>,
    pub api_key: Option<String>,
    /// `token=` from the query.
    pub query_token: Option<String>,
}

impl Credentials {
    pub fn of(request: &tiny_http::Request) -> Credentials {
        let header = |name: &str| {
            request
                .headers()
                .iter()
                .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
                .map(|h| h.value.as_str().trim().to_string())
        };
        let bearer = header("authorization").and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
        });
        let query = request.url().split_once('?').map_or("", |(_, q)| q);
        let query_token = query.split('&').find_map(|pair| pair.strip_prefix("token=")).map(str::to_string);
        Credentials { bearer, api_key: header("api-key"), query_token }
    }

    /// Whether these credentials carry `key`, as Bearer or api-key (constant-time compare).
    pub fn present(&self, key: &str) -> bool {
        [&self.bearer, &self.api_key]
            .into_iter()
            .flatten()
            .fold(false, |ok, candidate| ok | constant_time_eq(candidate.as_bytes(), key.as_bytes()))
    }
}

/// Compare without an early exit, so timing does not reveal how much of a key matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lite Codex body in the standard shape: only the packed items leave `input` (the others
    /// keep their bytes), their `functions` tools join `tools`, `reasoning.context` goes;
    /// a standard body keeps every byte.
    #[test]
    fn lite_bodies_in_the_standard_shape() {
        let lite = (codex::LITE_HEADER, "true");
        let packed = r#"{"type":"additional_tools","tools":[{"type":"namespace","name":"functions","tools":[{"type":"function","name":"b"}]},{"type":"namespace","name":"web","tools":[]}]}"#;
        type Case<'a> = (String, Option<(&'a str, &'a str)>, Result<&'a str, &'a str>);
        let cases: &[Case] = &[
            (
                format!(
                    r#"{{"model":"m","tools":[{{"type":"function","name":"a"}}],"input":[ {{"role":"user","content":"café"}} , {packed}],"reasoning":{{"effort":"low","context":"x"}}}}"#
                ),
                Some(lite),
                Ok(
                    r#"{"model":"m","tools":[{"type":"function","name":"a"},{"type":"function","name":"b"}],"input":[{"role":"user","content":"café"}],"reasoning":{"effort":"low"}}"#,
                ),
            ),
            (
                format!(r#"{{"model":"m","input":[{packed}]}}"#),
                None,
                Ok(r#"{"model":"m","input":[],"tools":[{"type":"function","name":"b"}]}"#),
            ),
            (
                r#"{"model":"m","input":[ {"role":"user","content":"hi"} ],"reasoning":{"context":"x"}}"#
                    .into(),
                Some(lite),
                Ok(r#"{"model":"m","input":[ {"role":"user","content":"hi"} ],"reasoning":{}}"#),
            ),
            (
                r#"{"model":"m","input":[ {"role":"user","content":"hi"} ],"reasoning":{"context":"x"}}"#
                    .into(),
                None,
                Ok(r#"{"model":"m","input":[ {"role":"user","content":"hi"} ],"reasoning":{"context":"x"}}"#),
            ),
            (
                format!(r#"{{"model":"m","tools":7,"input":[{packed}]}}"#),
                None,
                Err("`tools` is not an array"),
            ),
        ];
        for (body, header, expected) in cases {
            let mut headers: Vec<(String, String)> =
                header.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
            let object = Object::parse(body.as_bytes().to_vec()).unwrap();
            let got = standard_shape(object, &mut headers).map(|o| String::from_utf8(o.to_vec(&[])).unwrap());
            match (expected, &got) {
                (Ok(e), Ok(g)) => assert_eq!(g, e, "{body}"),
                (Err(e), Err(g)) => assert!(g.to_string().contains(e), "{g}"),
                _ => panic!("{body}: expected {expected:?}, got {got:?}"),
            }
            assert!(headers.is_empty() || got.is_err(), "the lite header never travels: {headers:?}");
        }
    }

    /// A shielded route's body: a JSON object, and whether it asks for a stream (a JSON `true`).
    #[test]
    fn bodies_parsed() {
        let cases: &[(&str, Result<bool, &str>)] = &[
            (r#"{"model":"a","input":"hi","stream":true}"#, Ok(true)),
            (r#" {"stream" : true , "messages":[]} "#, Ok(true)),
            (r#"{"model":"a","input":"hi"}"#, Ok(false)),
            (r#"{"stream":false,"model":"a"}"#, Ok(false)),
            (r#"{"stream":"true"}"#, Ok(false)),
            ("[1,2]", Err("invalid request: the body must be a JSON object")),
            ("{\"model\":", Err("invalid request: the body is not valid JSON")),
            ("", Err("invalid request: the body is not valid JSON")),
        ];
        for (body, expected) in cases {
            let got =
                parse_body(body.as_bytes().to_vec()).map(|(_, stream)| stream).map_err(|e| e.to_string());
            match (expected, &got) {
                (Ok(stream), Ok(got)) => assert_eq!(got, stream, "{body}"),
                (Err(prefix), Err(message)) => assert!(message.starts_with(prefix), "{message:?} for {body}"),
                _ => panic!("{body}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
