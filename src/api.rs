//! The two wire APIs and what one request exchanges: the client's API and the upstream's.
//!
//! A Responses client usually meets a Responses upstream and a Chat client a Chat upstream;
//! with `UPSTREAM_API=chat` a Responses client meets a Chat upstream, with
//! `UPSTREAM_API=responses-only` a Chat client meets a Responses upstream, and the request and
//! the answer are translated (`translate/`). This module only names the APIs; it does no I/O and
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

/// What an upstream is sent for each client API (`UPSTREAM_API`): `responses` is Responses
/// for Responses clients and Chat for Chat clients, `chat` is Chat for both, `responses-only`
/// Responses for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speaks {
    pub responses: Api,
    pub chat: Api,
}

impl Speaks {
    pub const BOTH: Speaks = Speaks { responses: Api::Responses, chat: Api::Chat };
    pub const CHAT_ONLY: Speaks = Speaks { responses: Api::Chat, chat: Api::Chat };
    pub const RESPONSES_ONLY: Speaks = Speaks { responses: Api::Responses, chat: Api::Responses };

    /// The exchange for a client of `client` on this upstream.
    pub fn exchange(self, client: Api) -> Exchange {
        let upstream = match client {
            Api::Responses => self.responses,
            Api::Chat => self.chat,
        };
        Exchange { client, upstream }
    }

    /// The `UPSTREAM_API` value that names it.
    pub fn name(self) -> &'static str {
        match (self.responses, self.chat) {
            (Api::Responses, Api::Chat) => "responses",
            (Api::Chat, _) => "chat",
            (Api::Responses, Api::Responses) => "responses-only",
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
    pub fn new(client: Api, upstream: Api) -> Exchange {
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
            (Api::Responses, Speaks::BOTH, Api::Responses, false),
            (Api::Responses, Speaks::CHAT_ONLY, Api::Chat, true),
            (Api::Responses, Speaks::RESPONSES_ONLY, Api::Responses, false),
            (Api::Chat, Speaks::BOTH, Api::Chat, false),
            (Api::Chat, Speaks::CHAT_ONLY, Api::Chat, false),
            (Api::Chat, Speaks::RESPONSES_ONLY, Api::Responses, true),
        ];
        for (client, configured, upstream, translated) in cases {
            let x = configured.exchange(client);
            assert_eq!((x.upstream, x.translated()), (upstream, translated), "{client:?} on {configured:?}");
        }
        let names: Vec<&str> =
            [Speaks::BOTH, Speaks::CHAT_ONLY, Speaks::RESPONSES_ONLY].map(Speaks::name).into();
        assert_eq!(names, ["responses", "chat", "responses-only"]);
    }
}
