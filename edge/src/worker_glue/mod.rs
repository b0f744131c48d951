//! The worker: thin handlers over the pure modules. Nothing here may panic
//! (a panic kills the wasm instance): request data is never unwrapped, and
//! the clock is `worker::Date`, never `SystemTime`.

#[macro_use]
mod layer;
mod admin;
mod click;
mod convert;
mod erase;
mod export;
mod integrations;
mod operator;
mod pages;
mod partner;
mod store;
mod webhooks;

use crate::auth;
use crate::fields::FieldError;
use crate::routes::{self, Match, Route};
use worker::*;

/// Secrets and settings read once per request from the environment.
pub struct Config {
    pub admin_token: String,
    pub export_token: String,
    pub click_secret: String,
    pub click_secret_previous: String,
    pub visitor_salt: String,
    pub email_salt: String,
    pub flush_ms: u64,
    /// Default (SPEC section 3): answer a click before its D1 write (a batch
    /// in flight is lost if the process dies); `CLICK_ACK=durable`: after it
    /// (group commit).
    pub click_ack_early: bool,
    /// Seconds before the first retry of a failed webhook delivery (then
    /// doubling, at most an hour): `WEBHOOK_RETRY_SECONDS`, default 30.
    pub webhook_retry_s: u32,
    /// Dev-only (`--var ALLOW_TEST_CLOCK:1`, never in wrangler.toml): lets the
    /// demo and tests stamp clicks and conversions with `X-Ptrack-Clock: <ms>`
    /// to replay a month of traffic.
    pub allow_test_clock: bool,
}

fn env_string(env: &Env, name: &str) -> String {
    env.secret(name)
        .map(|s| s.to_string())
        .or_else(|_| env.var(name).map(|v| v.to_string()))
        .unwrap_or_default()
}

thread_local! {
    static CONFIG: std::cell::OnceCell<std::rc::Rc<Config>> = const { std::cell::OnceCell::new() };
}

impl Config {
    /// Read once per isolate: secrets change only with a new deployment.
    pub fn get(env: &Env) -> std::rc::Rc<Config> {
        CONFIG.with(|c| {
            c.get_or_init(|| std::rc::Rc::new(Config::from_env(env)))
                .clone()
        })
    }

    fn from_env(env: &Env) -> Config {
        let visitor_salt = env_string(env, "VISITOR_SALT");
        let email_salt = env_string(env, "EMAIL_SALT");
        Config {
            admin_token: env_string(env, "ADMIN_TOKEN"),
            export_token: env_string(env, "EXPORT_TOKEN"),
            click_secret: env_string(env, "CLICK_SECRET"),
            click_secret_previous: env_string(env, "CLICK_SECRET_PREVIOUS"),
            email_salt: if email_salt.is_empty() {
                visitor_salt.clone()
            } else {
                email_salt
            },
            visitor_salt,
            allow_test_clock: env_string(env, "ALLOW_TEST_CLOCK") == "1",
            click_ack_early: env_string(env, "CLICK_ACK") != "durable",
            flush_ms: env_string(env, "CLICK_FLUSH_MS")
                .parse()
                .unwrap_or(25)
                .min(1000),
            webhook_retry_s: env_string(env, "WEBHOOK_RETRY_SECONDS")
                .parse()
                .unwrap_or(30)
                .clamp(1, 3600),
        }
    }

    pub fn click_secrets(&self) -> [&[u8]; 2] {
        [
            self.click_secret.as_bytes(),
            self.click_secret_previous.as_bytes(),
        ]
    }
}

pub fn now_ms() -> i64 {
    Date::now().as_millis() as i64
}

/// The time an event happened: now, or the test clock when allowed.
pub fn event_now(req: &Request, cfg: &Config) -> i64 {
    if cfg.allow_test_clock {
        if let Some(ms) = header(req, "X-Ptrack-Clock").and_then(|v| v.trim().parse::<i64>().ok()) {
            if crate::time::Timestamp::from_ms(ms).is_some() {
                return ms;
            }
        }
    }
    now_ms()
}

pub fn random<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf).map_err(|e| Error::RustError(format!("getrandom: {e}")))?;
    Ok(buf)
}

pub fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

/// A response with a body, status and content type; never cached.
pub fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Result<Response> {
    let headers = Headers::new();
    headers.set("Content-Type", content_type)?;
    headers.set("Cache-Control", "no-store")?;
    headers.set("X-Content-Type-Options", "nosniff")?;
    Ok(Response::from_bytes(body)?
        .with_status(status)
        .with_headers(headers))
}

pub fn json(status: u16, value: &serde_json::Value) -> Result<Response> {
    respond(status, "application/json", value.to_string().into_bytes())
}

pub fn text(status: u16, body: &str) -> Result<Response> {
    respond(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

pub fn field_error(status: u16, e: &FieldError) -> Result<Response> {
    respond(status, "application/json", e.to_json().into_bytes())
}

pub fn error(status: u16, reason: &str) -> Result<Response> {
    json(
        status,
        &serde_json::json!({ "error": { "reason": reason } }),
    )
}

/// Is this request carrying the expected bearer token?
pub fn bearer_ok(req: &Request, expected: &str) -> bool {
    let given = header(req, "Authorization");
    match auth::bearer(given.as_deref()) {
        Some(t) => !expected.is_empty() && auth::secret_eq(t, expected),
        None => false,
    }
}

/// Reads a body of at most `max` bytes; `None` when it is larger.
pub async fn body_limited(req: &mut Request, max: usize) -> Result<Option<Vec<u8>>> {
    if let Some(len) = header(req, "Content-Length").and_then(|l| l.trim().parse::<u64>().ok()) {
        if len > max as u64 {
            return Ok(None);
        }
    }
    let body = req.bytes().await?;
    Ok((body.len() <= max).then_some(body))
}

async fn handle(route: Route<'_>, req: Request, env: &Env, ctx: &Context) -> Result<Response> {
    let cfg = Config::get(env);
    match route {
        Route::Health => text(200, "ok"),
        Route::Baseline => {
            let headers = Headers::new();
            headers.set("Location", "https://example.com/")?;
            headers.set("Cache-Control", "no-store")?;
            Ok(Response::empty()?.with_status(302).with_headers(headers))
        }
        Route::Click(slug) => click::click(req, env, ctx, &cfg, slug).await,
        Route::Pixel => convert::pixel(req, env, &cfg).await,
        Route::Postback => convert::postback(req, env, &cfg).await,
        Route::Stripe(program) => integrations::stripe(req, env, &cfg, program).await,
        Route::Shopify(program) => integrations::shopify(req, env, &cfg, program).await,
        Route::ExportEvents | Route::ExportPartners | Route::ExportCoupons => {
            if !bearer_ok(&req, &cfg.export_token) {
                return error(401, "export token required");
            }
            export::handle(route, req, env).await
        }
        Route::Apply => partner::apply(req, env).await,
        Route::Portal | Route::Console | Route::Ui(_) => pages::serve(route),
        _ if route.is_partner() => partner::handle(route, req, env).await,
        _ => {
            if !bearer_ok(&req, &cfg.admin_token) {
                return error(401, "admin token required");
            }
            if route.is_erasure() {
                match route {
                    Route::Customer(id) => erase::handle(req, env, &cfg, id).await,
                    _ => erase::list(env).await,
                }
            } else if route.is_operator() {
                operator::handle(route, req, env).await
            } else if route.is_webhooks() {
                webhooks::handle(route, req, env).await
            } else {
                admin::handle(route, req, env).await
            }
        }
    }
}

/// The `WEBHOOKS` queue: outgoing webhook deliveries.
#[event(queue)]
async fn queue(batch: MessageBatch<String>, env: Env, _ctx: Context) -> Result<()> {
    webhooks::consume(batch, &env).await
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let method = req.method().to_string();
    let path = req.path();
    let result = match routes::route(&method, &path) {
        Match::Found(route) => handle(route, req, &env, &ctx).await,
        Match::MethodNotAllowed(allowed) => {
            let r = error(405, "method not allowed")?;
            r.headers().set("Allow", &allowed.join(", "))?;
            Ok(r)
        }
        Match::NotFound => text(404, "not found"),
    };
    match result {
        Ok(r) => Ok(r),
        Err(e) => {
            // Storage errors surface as opaque JS errors: log them with a
            // reference the caller can quote, answer 500.
            let reference = random::<6>().map(hex::encode).unwrap_or_default();
            console_error!("ref={reference} {method} {path}: {e}");
            json(
                500,
                &serde_json::json!({ "error": { "reason": "internal error", "ref": reference } }),
            )
        }
    }
}
