//! The routes the proxy answers itself: `/healthz`, `/metrics` (Prometheus) and `/status`
//! (a small HTML page for people), all rendered from a snapshot of `metrics.rs`.
//!
//! Who may read them: `/healthz` anyone. `/metrics` and `/status` anyone while none of
//! `PROXY_API_KEY`, `CLIENT_KEYS_FILE` and `STATUS_TOKEN` is set; otherwise a request must
//! carry one of those keys as `Authorization: Bearer` or `api-key`, and `/status` also accepts
//! `?token=STATUS_TOKEN` so that a browser can open it (a client key is never accepted in a
//! URL). These routes
//! write no log line, so a token in a query never reaches a log. This module builds replies;
//! writing them is `server.rs`'s job. It never shows a key, a prompt or a path.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use crate::config::Config;
use crate::error::{Error, Outcome};
use crate::inbound::{constant_time_eq, Credentials};
use crate::keys::Keys;
use crate::metrics::{
    self, ClientGauge, ClientRow, Gauges, Metrics, Recent, RouteKind, Snapshot, UpstreamHealth,
};
use crate::reply::Reply;
use crate::usage::Usage;

/// A locally answered route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Health,
    Metrics,
    Status,
}

/// The local route for a method and path (without query), if it is one.
pub fn route(method: &str, path: &str) -> Option<Page> {
    if method != "GET" && method != "HEAD" {
        return None;
    }
    match path {
        "/healthz" => Some(Page::Health),
        "/metrics" => Some(Page::Metrics),
        "/status" | "/status/" => Some(Page::Status),
        _ => None,
    }
}

/// Whether `page` may be read with these credentials (constant-time compares); `keys`, the
/// named client keys in effect.
pub fn allowed(
    page: Page,
    proxy_key: Option<&str>,
    keys: Option<&Keys>,
    status_token: Option<&str>,
    c: &Credentials,
) -> bool {
    if page == Page::Health || (proxy_key.is_none() && keys.is_none() && status_token.is_none()) {
        return true;
    }
    let named = keys.is_some_and(|k| k.of(c).is_some());
    let matches = |offered: &Option<String>, secret: Option<&str>| match (offered, secret) {
        (Some(o), Some(s)) => constant_time_eq(o.as_bytes(), s.as_bytes()),
        _ => false,
    };
    let headers = [&c.bearer, &c.api_key];
    let by_header = headers.iter().fold(false, |ok, h| ok | matches(h, proxy_key) | matches(h, status_token));
    let by_query = page == Page::Status && matches(&c.query_token, status_token);
    by_header || by_query || named
}

/// What a local page needs besides the counters.
pub struct Context<'a> {
    pub config: &'a Config,
    pub metrics: &'a Metrics,
    pub gauges: Gauges,
    /// Shutdown has begun: `/healthz` says so with a 503.
    pub draining: bool,
    /// Requests received and not yet answered (for `/healthz`).
    pub open_requests: usize,
    /// Filled by the caller; `server::upstream_health` today.
    pub upstreams: &'a [UpstreamHealth],
    /// The named client keys in effect (`CLIENT_KEYS_FILE`).
    pub keys: Option<&'a Keys>,
    /// Each named client's requests in flight and limit, filled by the caller.
    pub clients: &'a [ClientGauge],
}

/// The reply for a local page.
pub fn answer(page: Page, credentials: &Credentials, ctx: &Context) -> Reply {
    let config = ctx.config;
    if !allowed(page, config.proxy_key.as_deref(), ctx.keys, config.status_token.as_deref(), credentials) {
        return Reply::error(&Error::Unauthorized);
    }
    let snapshot = || ctx.metrics.snapshot(ctx.gauges, ctx.upstreams).with_clients(ctx.clients);
    match page {
        Page::Health => health(ctx),
        Page::Metrics => text(metrics::CONTENT_TYPE, metrics::render(&snapshot())),
        Page::Status => text("text/html; charset=utf-8", status_page(&snapshot())),
    }
}

/// `200 {"status":"ok"}`, or once shutdown has begun `503 {"status":"draining"}`, so a load
/// balancer or a Kubernetes readiness probe stops sending new requests while in-flight
/// answers finish.
fn health(ctx: &Context) -> Reply {
    let (status, word) = if ctx.draining { (503, "draining") } else { (200, "ok") };
    let health = json!({
        "status": word,
        "version": env!("CARGO_PKG_VERSION"),
        "in_flight": ctx.gauges.in_flight,
        "open_requests": ctx.open_requests,
    });
    Reply::json(status, &health)
}

fn text(content_type: &str, body: String) -> Reply {
    Reply {
        status: 200,
        content_type: content_type.into(),
        headers: vec![("cache-control".into(), "no-store".into())],
        body: body.into_bytes().into(),
    }
}

/// Seconds between two automatic reloads of `/status`.
const REFRESH_SECONDS: u32 = 10;

const STYLE: &str = "\
:root{--bg:#f6f7f9;--card:#fff;--ink:#1c2430;--muted:#667085;--line:#e4e7ec;--ok:#127a3f;\
--warn:#a15c00;--bad:#b42318;--accent:#2f5bd3}\
*{box-sizing:border-box}\
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}\
main{max-width:1100px;margin:0 auto;padding:20px 16px 40px}\
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:4px 16px;margin-bottom:16px}\
h1{font-size:22px;margin:0}h2{font-size:16px;margin:26px 0 8px}\
.meta{color:var(--muted);font-size:13px}\
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px}\
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px}\
.card b{display:block;font-size:26px;font-variant-numeric:tabular-nums}\
.card span{color:var(--muted);font-size:13px}\
.card.key{border-color:var(--accent);box-shadow:inset 4px 0 0 var(--accent)}\
.wrap{background:var(--card);border:1px solid var(--line);border-radius:10px;overflow-x:auto}\
table{border-collapse:collapse;width:100%;font-size:14px}\
th,td{text-align:left;padding:7px 10px;border-bottom:1px solid var(--line);vertical-align:top}\
th{color:var(--muted);font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.03em}\
tr:last-child td{border-bottom:0}\
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}th.n{text-align:right}\
.s{display:inline-block;min-width:38px;text-align:center;border-radius:6px;padding:0 6px;font-weight:600;color:#fff}\
.s2{background:var(--ok)}.s4{background:var(--warn)}.s5{background:var(--bad)}.sx{background:var(--muted)}\
.ok{color:var(--ok);font-weight:600}.cool{color:var(--warn);font-weight:600}\
.retry{display:inline-block;background:#eef2ff;border-radius:5px;padding:0 6px;margin:1px 4px 1px 0;font-size:13px;white-space:nowrap}\
.empty{color:var(--muted);padding:14px}\
code{font-size:13px;word-break:break-all}\
@media (max-width:640px){\
main{padding:14px 10px 30px}.card b{font-size:22px}\
th,td{padding:6px 8px}\
table.stack thead{display:none}\
table.stack tr{display:grid;grid-template-columns:1fr 1fr;gap:2px 12px;padding:8px 10px;border-bottom:1px solid var(--line)}\
table.stack tr:last-child{border-bottom:0}\
table.stack td{border:0;padding:1px 0;text-align:left}\
table.stack td::before{content:attr(data-label) ' ';color:var(--muted);font-size:12px}\
table.stack td.wide{grid-column:1/-1}}";

/// The whole `/status` page: self-contained (inline CSS, no script), reloads itself.
pub fn status_page(s: &Snapshot) -> String {
    let mut h = String::with_capacity(32 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\"><link rel=\"icon\" href=\"data:,\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>codex-shield status</title><style>{STYLE}</style></head><body><main>"
    );
    let started = &crate::date::timestamp(UNIX_EPOCH + Duration::from_millis(s.start_unix_ms))[..16];
    let _ = write!(
        h,
        "<header><h1>codex-shield</h1><span class=\"meta\">version <span id=\"version\">{}</span> · \
         up <span id=\"uptime\">{}</span> (since {} UTC) · reloads every {REFRESH_SECONDS} s</span></header>",
        html(s.version),
        human_duration(s.uptime),
        started.replace('T', " ")
    );
    cards(&mut h, s);
    upstreams(&mut h, s);
    clients(&mut h, &s.clients);
    outcomes(&mut h, s);
    tokens(&mut h, s);
    recent(&mut h, &s.recent);
    h.push_str("</main></body></html>\n");
    h
}

fn cards(h: &mut String, s: &Snapshot) {
    let absorbed: u64 = s.absorbed.iter().sum();
    let given_up: u64 = s.given_up.iter().sum();
    let cards = [
        (
            "requests",
            "Requests",
            s.total_requests().to_string(),
            format!("{} in flight of {}", s.gauges.in_flight, s.gauges.max_concurrent),
        ),
        (
            "delivered",
            "Answers delivered",
            s.delivered.iter().sum::<u64>().to_string(),
            "complete and checked".into(),
        ),
        (
            "absorbed",
            "Failures absorbed",
            absorbed.to_string(),
            "failed attempts the client never saw".into(),
        ),
        ("given-up", "Given up", given_up.to_string(), "retry budget spent".into()),
        (
            "retries",
            "Retries",
            s.retries.iter().sum::<u64>().to_string(),
            format!("waited {}", seconds(s.waited_seconds)),
        ),
        ("hangups", "Client hang-ups", s.hangups.to_string(), format!("{} refused as busy", s.busy)),
    ];
    h.push_str("<section class=\"cards\">");
    for (id, title, value, note) in cards {
        let class = if id == "absorbed" { "card key" } else { "card" };
        let _ = write!(
            h,
            "<div class=\"{class}\"><span>{title}</span><b id=\"{id}\">{value}</b><span>{note}</span></div>"
        );
    }
    h.push_str("</section>");
}

fn upstreams(h: &mut String, s: &Snapshot) {
    h.push_str(
        "<h2>Upstreams</h2><div class=\"wrap\"><table class=\"stack\"><thead><tr><th>#</th><th>state</th><th>endpoint</th>\
         <th class=\"n\">attempts</th><th class=\"n\">ok</th><th class=\"n\">failed</th></tr></thead><tbody>",
    );
    for u in &s.upstreams {
        let counts = s.attempts.get(u.number.wrapping_sub(1)).map_or(&[][..], Vec::as_slice);
        let total: u64 = counts.iter().sum();
        let ok = counts.get(Outcome::Ok.index()).copied().unwrap_or(0);
        let state = match u.cooling_down {
            Some(left) => format!("<span class=\"cool\">cooling down, {} left</span>", human_duration(left)),
            None => "<span class=\"ok\">ready</span>".into(),
        };
        let _ = write!(
            h,
            "<tr><td data-label=\"upstream\">{}</td><td data-label=\"state\">{state}</td>\
             <td class=\"wide\" data-label=\"endpoint\"><code>{}</code></td>\
             <td class=\"n\" data-label=\"attempts\">{total}</td><td class=\"n\" data-label=\"ok\">{ok}</td>\
             <td class=\"n\" data-label=\"failed\">{}</td></tr>",
            u.number,
            html(&u.endpoint),
            total - ok
        );
    }
    h.push_str("</tbody></table></div>");
}

/// One row per client name (`CLIENT_KEYS_FILE`), and `-` for requests without one; no table
/// before the first request of a proxy without a keys file.
fn clients(h: &mut String, clients: &[ClientRow]) {
    if clients.is_empty() {
        return;
    }
    h.push_str(
        "<h2>Clients</h2><div class=\"wrap\"><table class=\"stack\"><thead><tr><th>client</th>\
         <th class=\"n\">in flight</th><th class=\"n\">requests</th><th class=\"n\">2xx</th>\
         <th class=\"n\">4xx</th><th class=\"n\">5xx</th><th class=\"n\">over max</th></tr></thead><tbody>",
    );
    for c in clients {
        let name = html(&c.name);
        let total: u64 = c.counts.requests.iter().sum();
        let [_, ok, _, client_errors, errors] = c.counts.requests;
        let in_flight = match c.limit {
            Some(max) => format!("{} of {max}", c.in_flight),
            None => c.in_flight.to_string(),
        };
        let _ = write!(
            h,
            "<tr id=\"client-{name}\"><td data-label=\"client\"><code>{name}</code></td>\
             <td class=\"n\" data-label=\"in flight\">{in_flight}</td>\
             <td class=\"n\" data-label=\"requests\" id=\"client-{name}-requests\">{total}</td>\
             <td class=\"n\" data-label=\"2xx\">{ok}</td><td class=\"n\" data-label=\"4xx\">{client_errors}</td>\
             <td class=\"n\" data-label=\"5xx\">{errors}</td>\
             <td class=\"n\" data-label=\"over max\">{}</td></tr>",
            c.counts.limited
        );
    }
    h.push_str("</tbody></table></div>");
}

fn outcomes(h: &mut String, s: &Snapshot) {
    h.push_str(
        "<h2>Upstream attempts by outcome</h2><div class=\"wrap\"><table><thead><tr><th>outcome</th>\
         <th class=\"n\">attempts</th><th class=\"n\">absorbed</th><th class=\"n\">given up</th></tr></thead><tbody>",
    );
    for o in Outcome::ALL {
        let attempts: u64 = s.attempts.iter().map(|a| a[o.index()]).sum();
        let (absorbed, given_up) = (s.absorbed[o.index()], s.given_up[o.index()]);
        if attempts + absorbed + given_up == 0 {
            continue;
        }
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\" id=\"attempts-{}\">{attempts}</td><td class=\"n\">{absorbed}</td>\
             <td class=\"n\">{given_up}</td></tr>",
            o.label(),
            o.label()
        );
    }
    h.push_str("</tbody></table></div>");
}

/// Tokens by upstream, then by client: what the answers clients got cost, the share of their
/// input read from the prompt cache, and beside it what the discarded attempts cost.
fn tokens(h: &mut String, s: &Snapshot) {
    h.push_str("<h2>Tokens</h2>");
    if s.tokens.is_empty() {
        h.push_str("<div class=\"wrap\"><p class=\"empty\">No usage reported yet.</p></div>");
        return;
    }
    let mut by_upstream: Vec<(String, Usage, Usage)> = Vec::new();
    let mut by_client: Vec<(String, Usage, Usage)> = Vec::new();
    for t in &s.tokens {
        for (rows, key) in
            [(&mut by_upstream, t.upstream.to_string()), (&mut by_client, t.client_label().to_string())]
        {
            match rows.iter_mut().find(|(k, ..)| *k == key) {
                Some((_, delivered, discarded)) => {
                    *delivered += t.delivered;
                    *discarded += t.discarded;
                }
                None => rows.push((key, t.delivered, t.discarded)),
            }
        }
    }
    by_client.sort_by(|a, b| a.0.cmp(&b.0));
    for (what, rows) in [("upstream", by_upstream), ("client", by_client)] {
        let _ = write!(
            h,
            "<div class=\"wrap\"><table class=\"stack\"><thead><tr><th>{what}</th><th class=\"n\">input</th><th class=\"n\">cached</th>\
             <th class=\"n\">cache hit</th><th class=\"n\">output</th><th class=\"n\">reasoning</th>\
             <th class=\"n\">discarded in</th><th class=\"n\">discarded out</th></tr></thead><tbody>"
        );
        for (key, d, x) in rows {
            let ratio = d.cache_ratio().map_or("–".to_string(), |r| format!("{:.1} %", r * 100.0));
            let id = format!("{what}-{}", html(&key));
            let _ = write!(
                h,
                "<tr><td data-label=\"{what}\">{}</td><td class=\"n\" data-label=\"input\" id=\"input-{id}\">{}</td>\
                 <td class=\"n\" data-label=\"cached\">{}</td>\
                 <td class=\"n\" data-label=\"cache hit\" id=\"cache-{id}\">{ratio}</td>\
                 <td class=\"n\" data-label=\"output\" id=\"output-{id}\">{}</td><td class=\"n\" data-label=\"reasoning\">{}</td>\
                 <td class=\"n\" data-label=\"discarded in\" id=\"discarded-{id}\">{}</td>\
                 <td class=\"n\" data-label=\"discarded out\">{}</td></tr>",
                html(&key),
                d.input,
                d.cached,
                d.output,
                d.reasoning,
                x.input,
                x.output
            );
        }
        h.push_str("</tbody></table></div>");
    }
}

fn recent(h: &mut String, recent: &[Recent]) {
    let _ = write!(h, "<h2>Last {} requests</h2><div class=\"wrap\">", metrics::RECENT);
    if recent.is_empty() {
        h.push_str("<p class=\"empty\">No request yet.</p></div>");
        return;
    }
    h.push_str(
        "<table class=\"stack\"><thead><tr><th>time (UTC)</th><th>route</th><th>status</th>\
         <th class=\"n\">attempts</th><th>retries (reason, wait)</th><th class=\"n\">size</th>\
         <th class=\"n\">duration</th></tr></thead><tbody>",
    );
    for r in recent {
        let time = crate::date::timestamp(UNIX_EPOCH + Duration::from_millis(r.at_ms));
        let class = match (r.client_gone, r.status / 100) {
            (true, _) => "sx",
            (_, 2) => "s2",
            (_, 4) => "s4",
            _ => "s5",
        };
        let status = if r.client_gone { format!("{} gone", r.status) } else { r.status.to_string() };
        let _ = write!(
            h,
            "<tr><td data-label=\"time\">{}</td><td data-label=\"route\">{}</td>\
             <td data-label=\"status\"><span class=\"s {class}\">{status}</span></td>\
             <td class=\"n\" data-label=\"attempts\">{}</td><td class=\"wide\" data-label=\"retries\">{}</td>\
             <td class=\"n\" data-label=\"size\">{}</td><td class=\"n\" data-label=\"duration\">{}</td></tr>",
            &time[11..19],
            route_name(r.route),
            r.attempts,
            retries(r),
            human_bytes(r.bytes),
            human_duration(Duration::from_millis(r.duration_ms))
        );
    }
    h.push_str("</tbody></table></div>");
}

fn route_name(route: RouteKind) -> &'static str {
    match route {
        RouteKind::Responses => "responses",
        RouteKind::Chat => "chat",
        RouteKind::Other => "other /v1",
        RouteKind::None => "no route",
    }
}

/// "429 · 1.00 s" per retry, and how many more were not kept.
fn retries(r: &Recent) -> String {
    let mut out = String::new();
    for (outcome, wait_ms) in r.retries.iter().flatten() {
        let _ = write!(
            out,
            "<span class=\"retry\">{} · {:.2} s</span>",
            outcome.label(),
            *wait_ms as f64 / 1000.0
        );
    }
    let shown = r.retries.iter().flatten().count() as u32;
    if r.n_retries > shown {
        let _ = write!(out, "+{} more", r.n_retries - shown);
    }
    if out.is_empty() {
        out.push('—');
    }
    out
}

fn seconds(s: f64) -> String {
    human_duration(Duration::from_secs_f64(s.max(0.0)))
}

/// `734 ms`, `2.3 s`, `4m 05s`, `3h 12m`, `2d 4h`.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    match s {
        _ if ms < 1000 => format!("{ms} ms"),
        0..=59 => format!("{:.1} s", d.as_secs_f64()),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d {}h", s / 86_400, s / 3600 % 24),
    }
}

/// `512 B`, `17.7 kB`, `1.0 MB` (SI units).
pub fn human_bytes(n: u64) -> String {
    match n {
        0..=999 => format!("{n} B"),
        1000..=999_999 => format!("{:.1} kB", n as f64 / 1e3),
        _ => format!("{:.1} MB", n as f64 / 1e6),
    }
}

/// Text for HTML: `<`, `>`, `&`, `"` and `'` escaped.
fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Done, Tally};
    use crate::usage::Spent;

    #[test]
    fn routes() {
        let cases = [
            ("GET", "/healthz", Some(Page::Health)),
            ("HEAD", "/healthz", Some(Page::Health)),
            ("GET", "/metrics", Some(Page::Metrics)),
            ("GET", "/status", Some(Page::Status)),
            ("GET", "/status/", Some(Page::Status)),
            ("POST", "/metrics", None),
            ("POST", "/healthz", None),
            ("GET", "/v1/metrics", None),
            ("GET", "/statusx", None),
        ];
        for (method, path, expected) in cases {
            assert_eq!(route(method, path), expected, "{method} {path}");
        }
    }

    #[test]
    fn who_may_read() {
        let c = |bearer: Option<&str>, api_key: Option<&str>, query: Option<&str>| Credentials {
            bearer: bearer.map(str::to_string),
            api_key: api_key.map(str::to_string),
            query_token: query.map(str::to_string),
        };
        let none = c(None, None, None);
        let (key, token) = (Some("pk"), Some("st"));
        let named = crate::keys::parse("alice: k-alice\n").unwrap();
        let file = Some(&named);
        // (page, PROXY_API_KEY, CLIENT_KEYS_FILE, STATUS_TOKEN, credentials, allowed)
        let cases = [
            (Page::Metrics, None, None, None, none.clone(), true),
            (Page::Status, None, None, None, none.clone(), true),
            (Page::Health, key, None, token, none.clone(), true),
            (Page::Metrics, key, None, None, none.clone(), false),
            (Page::Metrics, key, None, None, c(Some("pk"), None, None), true),
            (Page::Metrics, key, None, None, c(None, Some("pk"), None), true),
            (Page::Metrics, key, None, None, c(Some("wrong"), None, None), false),
            (Page::Metrics, key, None, token, c(Some("st"), None, None), true),
            (Page::Metrics, key, None, token, c(None, None, Some("st")), false),
            (Page::Status, key, None, token, c(None, None, Some("st")), true),
            (Page::Status, key, None, token, c(None, None, Some("pk")), false),
            (Page::Status, key, None, token, c(None, None, Some("s")), false),
            (Page::Status, None, None, token, none.clone(), false),
            (Page::Status, None, None, token, c(None, None, Some("st")), true),
            (Page::Status, key, None, None, c(None, None, Some("pk")), false),
            (Page::Status, key, None, token, c(Some("pk"), None, None), true),
            (Page::Metrics, None, file, None, none.clone(), false),
            (Page::Metrics, None, file, None, c(Some("k-alice"), None, None), true),
            (Page::Status, None, file, None, c(None, Some("k-alice"), None), true),
            (Page::Status, None, file, None, c(None, None, Some("k-alice")), false),
            (Page::Status, None, file, None, c(Some("k-bob"), None, None), false),
            (Page::Metrics, key, file, None, c(Some("pk"), None, None), true),
            (Page::Status, None, file, token, c(None, None, Some("st")), true),
            (Page::Status, None, file, token, c(None, None, Some("k-alice")), false),
        ];
        for (i, (page, k, f, t, creds, expected)) in cases.into_iter().enumerate() {
            assert_eq!(allowed(page, k, f, t, &creds), expected, "row {i}: {page:?} {k:?} {t:?} {creds:?}");
        }
    }

    fn snapshot() -> Snapshot {
        let m = Metrics::new(1);
        let mut t = Tally::default();
        m.attempt(&mut t, 1, Outcome::RateLimited, Duration::from_millis(20));
        m.retry(&mut t, Outcome::RateLimited, Duration::from_millis(1500));
        m.attempt(&mut t, 1, Outcome::Ok, Duration::from_millis(700));
        let route = RouteKind::Responses;
        let done = Done {
            route,
            status: 200,
            bytes: 17_700,
            duration: Duration::from_millis(2300),
            tally: t,
            delivered: true,
        };
        m.request_done(&done);
        let usage = |input, cached, output| Usage { input, cached, output, reasoning: 0 };
        m.tokens(1, None, usage(1000, 750, 40), Spent::Delivered);
        m.tokens(1, Some(&"<b>ob".into()), usage(200, 50, 10), Spent::Delivered);
        m.tokens(1, Some(&"<b>ob".into()), usage(300, 0, 5), Spent::Discarded);
        let up = UpstreamHealth { number: 1, endpoint: "https://x/v1?<script>".into(), cooling_down: None };
        m.snapshot(Gauges { in_flight: 0, max_concurrent: 256 }, &[up])
    }

    #[test]
    fn status_page_shows_the_numbers_and_escapes() {
        let page = status_page(&snapshot());
        for needle in [
            "<b id=\"requests\">1</b>",
            "<b id=\"absorbed\">1</b>",
            "<b id=\"delivered\">1</b>",
            "<b id=\"given-up\">0</b>",
            "id=\"attempts-429\">1</td>",
            "<span class=\"retry\">429 · 1.50 s</span>",
            "17.7 kB",
            "2.3 s",
            "https://x/v1?&lt;script&gt;",
            "<span class=\"ok\">ready</span>",
            "id=\"cache-upstream-1\">66.7 %</td>",
            "id=\"discarded-upstream-1\">300</td>",
            "id=\"cache-client--\">75.0 %</td>",
            "id=\"cache-client-&lt;b&gt;ob\">25.0 %</td>",
            "id=\"discarded-client-&lt;b&gt;ob\">300</td>",
        ] {
            assert!(page.contains(needle), "missing {needle:?}");
        }
        assert!(!page.contains("<script"), "nothing executable, nothing unescaped");
        assert!(!page.contains("src=") && !page.contains("stylesheet"), "no external assets");
    }

    #[test]
    fn human_units() {
        let d = |ms| human_duration(Duration::from_millis(ms));
        let cases = [
            (d(734), "734 ms"),
            (d(2_345), "2.3 s"),
            (d(245_000), "4m 05s"),
            (d(11_520_000), "3h 12m"),
            (d(187_200_000), "2d 4h"),
        ];
        for (got, expected) in cases {
            assert_eq!(got, expected);
        }
        let b = [(512, "512 B"), (17_700, "17.7 kB"), (1_048_576, "1.0 MB")];
        for (n, expected) in b {
            assert_eq!(human_bytes(n), expected);
        }
    }
}
