//! The two wire APIs and what one request exchanges: the client's API and the upstream's.
//!
//! A Responses client usually meets a Responses upstream and a Chat client a Chat upstream;
//! with `UPSTREAM_API=chat` a Responses client meets a Chat upstream, and the request and the
//! answer are translated (`translate/`). This module only names the APIs; it does no I/O and
//! knows nothing of URLs beyond each API's path suffix.

/// The two streamed APIs the shield checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// `POST /v1/responses`: complete on `response.completed` or `response.incomplete`.
    Responses,
    /// `POST /v1/chat/completions`: complete on `data: [DONE]`.
    Chat,
}

impl Api {
    /// The path suffix that names this API in a URL.
    pub fn suffix(self) -> &'static str {
        match self {
            Api::Responses => "/responses",
            Api::Chat => "/chat/completions",
        }
    }

    /// The name used in configuration, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Api::Responses => "responses",
            Api::Chat => "chat",
        }
    }
}

/// The APIs on either side of one shielded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// What the client speaks (its route).
    pub client: Api,
    /// What the chosen upstream speaks.
    pub upstream: Api,
}

impl Exchange {
    /// The exchange for a client API on an upstream that speaks `upstream` for Responses
    /// requests. Chat clients always talk Chat: no upstream speaks only Responses.
    pub fn new(client: Api, upstream_for_responses: Api) -> Exchange {
        let upstream = match client {
            Api::Responses => upstream_for_responses,
            Api::Chat => Api::Chat,
        };
        Exchange { client, upstream }
    }

    /// Whether the request and the answer are translated between the two APIs.
    pub fn translated(self) -> bool {
        self.client != self.upstream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchanges() {
        let cases = [
            (Api::Responses, Api::Responses, Api::Responses, false),
            (Api::Responses, Api::Chat, Api::Chat, true),
            (Api::Chat, Api::Responses, Api::Chat, false),
            (Api::Chat, Api::Chat, Api::Chat, false),
        ];
        for (client, configured, upstream, translated) in cases {
            let x = Exchange::new(client, configured);
            assert_eq!((x.upstream, x.translated()), (upstream, translated), "{client:?} on {configured:?}");
        }
    }
}
