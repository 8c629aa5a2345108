//! Where a request goes: the client's route on our side, the upstream URL and auth style on
//! the other.
//!
//! `AZURE_ENDPOINT` is either a base URL (`https://x.openai.azure.com/openai/v1`) to which the
//! client's path after `/v1` is appended, or a full URL ending in `/chat/completions` or
//! `/responses` (Azure's `.../deployments/NAME/chat/completions?api-version=...`), used as-is
//! for that API. Only the configured origin is ever contacted: the client picks a path, never
//! a host, scheme or port. Pure string work; no I/O.

use crate::check::Api;

/// The upstream endpoint, split once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `scheme://host[:port]`
    pub origin: String,
    /// Base path without a trailing slash and without the API suffix (may be empty).
    pub path: String,
    /// Set when the configured URL names one API's full endpoint.
    pub fixed: Option<Api>,
    /// The endpoint's own query (`api-version=...`), without `?`.
    pub query: Option<String>,
    pub host: String,
}

/// How the upstream key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `api-key: KEY` (Azure).
    ApiKey,
    /// `Authorization: Bearer KEY` (OpenAI and most compatible servers).
    Bearer,
}

/// What the proxy does with a request, from its method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A streamed API call: buffered, checked and retried. Holds the path after `/v1`.
    Shielded(Api, String),
    /// Any other `/v1/...` call, forwarded as-is. Holds the path after `/v1`.
    Forward(String),
    NotFound,
}

impl Endpoint {
    /// Parse `AZURE_ENDPOINT`; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let url = url.trim();
        let (scheme, rest) =
            url.split_once("://").ok_or("expected a URL such as https://NAME.openai.azure.com/openai/v1")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!("unsupported scheme {scheme:?} (use http or https)"));
        }
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q.to_string()).filter(|q| !q.is_empty())),
            None => (rest, None),
        };
        let (authority, path) = match before_query.find('/') {
            Some(i) => before_query.split_at(i),
            None => (before_query, ""),
        };
        if authority.contains('@') {
            return Err("credentials in the URL are not supported; use AZURE_API_KEY".into());
        }
        let host = host_of(authority);
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        let path = path.trim_end_matches('/');
        let fixed = [Api::Chat, Api::Responses].into_iter().find(|api| path.ends_with(api.suffix()));
        let base = fixed.map_or(path, |api| &path[..path.len() - api.suffix().len()]);
        Ok(Endpoint {
            origin: format!("{scheme}://{authority}"),
            path: base.to_string(),
            fixed,
            query,
            host: host.to_ascii_lowercase(),
        })
    }

    /// The upstream URL for a client path after `/v1` (`/responses`, `/models`) and query.
    pub fn url_for(&self, rest: &str, api: Option<Api>, client_query: Option<&str>) -> String {
        let path = match (self.fixed, api) {
            (Some(fixed), Some(api)) if fixed == api => api.suffix(),
            _ => rest,
        };
        let query: Vec<&str> =
            [self.query.as_deref(), client_query].into_iter().flatten().filter(|q| !q.is_empty()).collect();
        let mut url = format!("{}{}{}", self.origin, self.path, path);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        url
    }

    /// The auth style `auto` picks: `api-key` for Azure hosts, Bearer otherwise.
    pub fn auto_auth(&self) -> Auth {
        const AZURE: [&str; 3] =
            [".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com"];
        if AZURE.iter().any(|suffix| self.host.ends_with(suffix)) {
            Auth::ApiKey
        } else {
            Auth::Bearer
        }
    }

    /// Whether its chat completions take `prompt_cache_key` (kept on the translated path):
    /// OpenAI's API, and Azure's v1 API (no `api-version` query), which follows OpenAI's
    /// parameters; Azure's dated API versions refuse arguments they do not know, and other
    /// chat servers have no prompt cache keyed by it.
    pub fn takes_prompt_cache_key(&self) -> bool {
        let dated =
            self.query.as_deref().is_some_and(|q| q.split('&').any(|p| p.starts_with("api-version=")));
        self.host == "api.openai.com" || (self.auto_auth() == Auth::ApiKey && !dated)
    }

    /// The endpoint for logs and the banner: query values masked except `api-version`.
    pub fn display(&self) -> String {
        let suffix = self.fixed.map_or("", Api::suffix);
        let mut out = format!("{}{}{}", self.origin, self.path, suffix);
        if let Some(query) = &self.query {
            let masked: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, v)) if k == "api-version" => format!("{k}={v}"),
                    Some((k, _)) => format!("{k}=***"),
                    None => pair.to_string(),
                })
                .collect();
            out.push('?');
            out.push_str(&masked.join("&"));
        }
        out
    }
}

/// The host part of `host[:port]` or `[v6]:port`.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    authority.split(':').next().unwrap_or("")
}

/// The route for a method and a path (without its query). The proxy's own pages (`/healthz`,
/// `/metrics`, `/status`) are `local::route`'s, asked first.
pub fn route(method: &str, path: &str) -> Route {
    let (rest, versioned) = match path.strip_prefix("/v1") {
        Some(rest) if rest.starts_with('/') => (rest, true),
        _ => (path, false),
    };
    if method == "POST" {
        for api in [Api::Responses, Api::Chat] {
            if rest == api.suffix() || rest.strip_suffix('/') == Some(api.suffix()) {
                return Route::Shielded(api, api.suffix().to_string());
            }
        }
    }
    if versioned && !rest.split('/').any(is_refused_segment) {
        return Route::Forward(rest.to_string());
    }
    Route::NotFound
}

/// A path segment the proxy will not forward: a dot segment (`.`, `..`), also when its dots
/// are percent-encoded (`%2e`, `%2E`, `.%2e`: an upstream that decodes before resolving would
/// climb out of `/v1`), or one that hides a separator (`%2f`, `%5c`, `\`).
fn is_refused_segment(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase();
    let decoded = lower.replace("%2e", ".");
    decoded == "."
        || decoded == ".."
        || lower.contains("%2f")
        || lower.contains("%5c")
        || lower.contains('\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        // (AZURE_ENDPOINT, client path after /v1, api, client query, expected upstream URL)
        type Case<'a> = (&'a str, &'a str, Option<Api>, Option<&'a str>, &'a str);
        let cases: &[Case] = &[
            (
                "https://x.openai.azure.com/openai/v1",
                "/responses",
                Some(Api::Responses),
                None,
                "https://x.openai.azure.com/openai/v1/responses",
            ),
            (
                "https://x.openai.azure.com/openai/v1/",
                "/chat/completions",
                Some(Api::Chat),
                None,
                "https://x.openai.azure.com/openai/v1/chat/completions",
            ),
            ("https://api.openai.com/v1", "/models", None, None, "https://api.openai.com/v1/models"),
            (
                "http://127.0.0.1:8000/v1",
                "/responses",
                Some(Api::Responses),
                Some("a=1"),
                "http://127.0.0.1:8000/v1/responses?a=1",
            ),
            (
                "https://x.openai.azure.com/openai/deployments/gpt/chat/completions?api-version=2024-10-21",
                "/chat/completions",
                Some(Api::Chat),
                None,
                "https://x.openai.azure.com/openai/deployments/gpt/chat/completions?api-version=2024-10-21",
            ),
            (
                "https://x.openai.azure.com/openai/responses?api-version=2025-04-01-preview",
                "/responses",
                Some(Api::Responses),
                Some("x=2"),
                "https://x.openai.azure.com/openai/responses?api-version=2025-04-01-preview&x=2",
            ),
            (
                "https://x.openai.azure.com/openai/deployments/gpt/chat/completions?api-version=2024-10-21",
                "/models",
                None,
                None,
                "https://x.openai.azure.com/openai/deployments/gpt/models?api-version=2024-10-21",
            ),
            (
                "https://x.openai.azure.com/openai?api-version=2025-04-01-preview",
                "/responses",
                Some(Api::Responses),
                None,
                "https://x.openai.azure.com/openai/responses?api-version=2025-04-01-preview",
            ),
        ];
        for (endpoint, rest, api, query, expected) in cases {
            let ep = Endpoint::parse(endpoint).unwrap();
            assert_eq!(ep.url_for(rest, *api, *query), *expected, "{endpoint} {rest}");
        }
    }

    #[test]
    fn bad_endpoints() {
        for bad in ["", "localhost:8000", "ftp://x/v1", "https:///v1", "https://user:pw@x/v1"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn auth_and_display() {
        let cases: &[(&str, Auth)] = &[
            ("https://x.openai.azure.com/openai/v1", Auth::ApiKey),
            ("https://X.cognitiveservices.azure.com/openai/v1", Auth::ApiKey),
            ("https://x.services.ai.azure.com/models", Auth::ApiKey),
            ("https://api.openai.com/v1", Auth::Bearer),
            ("https://openai.azure.com.evil.example/v1", Auth::Bearer),
            ("http://[::1]:8000/v1", Auth::Bearer),
        ];
        for (url, auth) in cases {
            assert_eq!(Endpoint::parse(url).unwrap().auto_auth(), *auth, "{url}");
        }
        let takes = [
            ("https://api.openai.com/v1", true),
            ("https://x.openai.azure.com/openai/v1", true),
            (
                "https://x.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21",
                false,
            ),
            ("https://x.services.ai.azure.com/openai/v1/chat/completions", true),
            ("http://127.0.0.1:8000/v1", false),
            ("https://api.openai.com.evil.example/v1", false),
        ];
        for (url, expected) in takes {
            assert_eq!(Endpoint::parse(url).unwrap().takes_prompt_cache_key(), expected, "{url}");
        }
        let ep = Endpoint::parse("https://h/openai/responses?api-version=1&sig=secret").unwrap();
        assert_eq!(ep.display(), "https://h/openai/responses?api-version=1&sig=***");
    }

    #[test]
    fn routes() {
        let s = |api, p: &str| Route::Shielded(api, p.to_string());
        let f = |p: &str| Route::Forward(p.to_string());
        let cases: Vec<(&str, &str, Route)> = vec![
            ("POST", "/v1/responses", s(Api::Responses, "/responses")),
            ("POST", "/responses", s(Api::Responses, "/responses")),
            ("POST", "/v1/chat/completions", s(Api::Chat, "/chat/completions")),
            ("POST", "/chat/completions/", s(Api::Chat, "/chat/completions")),
            ("GET", "/v1/models", f("/models")),
            ("GET", "/v1/responses/resp_1", f("/responses/resp_1")),
            ("POST", "/v1/responses/compact", f("/responses/compact")),
            ("GET", "/v1/responses", f("/responses")),
            // answered by `local::route` before this one is asked
            ("GET", "/healthz", Route::NotFound),
            ("POST", "/healthz", Route::NotFound),
            ("GET", "/", Route::NotFound),
            ("GET", "/models", Route::NotFound),
            ("GET", "/v1", Route::NotFound),
            ("GET", "/v1x/models", Route::NotFound),
            ("GET", "/v1/../admin", Route::NotFound),
            ("GET", "/v1/./models", Route::NotFound),
            ("GET", "/v1/%2e%2e/x", Route::NotFound),
            ("GET", "/v1/%2E%2E/x", Route::NotFound),
            ("GET", "/v1/%2e%2E/x", Route::NotFound),
            ("GET", "/v1/.%2e/x", Route::NotFound),
            ("GET", "/v1/%2e./x", Route::NotFound),
            ("GET", "/v1/%2e/models", Route::NotFound),
            ("GET", "/v1/models/%2e%2e", Route::NotFound),
            ("GET", "/v1/..%2fadmin", Route::NotFound),
            ("GET", "/v1/..%5Cadmin", Route::NotFound),
            ("GET", "/v1/a\\..\\admin", Route::NotFound),
            ("GET", "/v1/models/%2e%2e%2e", f("/models/%2e%2e%2e")),
            ("GET", "/v1/files/a.b", f("/files/a.b")),
            ("GET", "/v1/files/..x", f("/files/..x")),
        ];
        for (method, path, expected) in cases {
            assert_eq!(route(method, path), expected, "{method} {path}");
        }
    }
}
