//! The HTTP edge: the five LAPI calls nfsentry makes (watcher login, push alerts, delete our
//! decisions, the decision stream as delta or full list), blocking, each with a connect
//! timeout and an overall deadline, so no call can hang the worker.
//!
//! It keeps no state between calls beyond ureq's connection pool: the token, retries and
//! backoff are the worker's. Errors say what kind of failure it was (unreachable, refused,
//! busy, answered with an error, unreadable), which is what the worker acts on. No secret is
//! ever part of an error: credentials travel in headers and bodies that are never quoted, and
//! the URL carries none (the config refuses them).

use std::net::IpAddr;
use std::time::Duration;

use thiserror::Error;
use ureq::http::Response;
use ureq::{Agent, Body};

use super::wire::{self, Alert, Delta, FullList};
use crate::config::{LapiUrl, Secret};

/// Error bodies are read this far for their message.
const ERROR_BODY_MAX_BYTES: u64 = 4_096;
/// A message from the LAPI is quoted this far in logs.
const MESSAGE_MAX_CHARS: usize = 200;
/// Small answers: a token, alert ids, a count, a delta.
const SMALL_BODY_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// A full list: every active decision, and (skipped unread, but still sent) every expired one
/// the LAPI still stores, which can be days of them.
const FULL_BODY_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Not Debug: it holds the password.
#[derive(serde::Serialize)]
struct LoginRequest<'a> {
    machine_id: &'a str,
    password: &'a str,
    scenarios: [&'a str; 1],
}

/// Not Debug: it holds the token.
#[derive(Default, serde::Deserialize)]
struct LoginReply {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    expire: Option<String>,
}

/// How long calls may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To open a connection.
    pub connect: Duration,
    /// A whole call: connect, send, and read the whole answer.
    pub call: Duration,
    /// A whole full-list call, whose answer can be large.
    pub full_list: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(3),
            call: Duration::from_secs(10),
            full_list: Duration::from_secs(60),
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum LapiError {
    /// No answer: connection refused or reset, timeout, name not found.
    #[error("cannot reach the LAPI: {0}")]
    Unreachable(String),
    /// 401 or 403: a wrong password or key, an unknown machine or bouncer, an expired token.
    #[error("the LAPI refused the credentials (HTTP {status}: {message})")]
    Refused { status: u16, message: String },
    /// 500 "database is locked": SQLite under concurrent writers; a retry soon succeeds.
    #[error("the LAPI's database is busy (HTTP {status}: {message})")]
    Busy { status: u16, message: String },
    /// Any other error status.
    #[error("the LAPI answered HTTP {status}: {message}")]
    Status { status: u16, message: String },
    /// A success whose body could not be read.
    #[error("the LAPI's answer could not be read: {0}")]
    Unreadable(String),
}

/// A successful watcher login.
pub struct Login {
    pub token: String,
    /// The token's `expire` as the LAPI wrote it; the worker reads it.
    pub expire: Option<String>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Login")
            .field("expire", &self.expire)
            .finish_non_exhaustive()
    }
}

/// A LAPI client: the base URL and a connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    agent: Agent,
    url: LapiUrl,
    timeouts: Timeouts,
}

impl Client {
    pub fn new(url: LapiUrl, timeouts: Timeouts) -> Client {
        let agent = Agent::config_builder()
            // Statuses are answers to act on, not transport errors.
            .http_status_as_error(false)
            // The LAPI is a known host; a proxy from the environment is not meant for it.
            .proxy(None)
            .max_redirects(0)
            .timeout_connect(Some(timeouts.connect))
            .timeout_global(Some(timeouts.call))
            .user_agent(format!("nfsentry/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Client {
            agent,
            url,
            timeouts,
        }
    }

    pub fn url(&self) -> &LapiUrl {
        &self.url
    }

    /// `POST /v1/watchers/login`.
    pub fn login(
        &self,
        machine_id: &str,
        password: &Secret,
        scenario: &str,
    ) -> Result<Login, LapiError> {
        let request = LoginRequest {
            machine_id,
            password: password.expose(),
            scenarios: [scenario],
        };
        let response = self
            .agent
            .post(self.url.endpoint("v1/watchers/login"))
            .send_json(&request)
            .map_err(transport)?;
        let reply: LoginReply = read_success(response, SMALL_BODY_MAX_BYTES)?;
        match reply.token {
            Some(token) if !token.is_empty() => Ok(Login {
                token,
                expire: reply.expire,
            }),
            _ => Err(LapiError::Unreadable(
                "the login answer has no token".into(),
            )),
        }
    }

    /// `POST /v1/alerts`; the number of alerts the LAPI says it created.
    pub fn push_alerts(&self, token: &str, alerts: &[Alert]) -> Result<usize, LapiError> {
        let response = self
            .agent
            .post(self.url.endpoint("v1/alerts"))
            .header("Authorization", format!("Bearer {token}"))
            .send_json(alerts)
            .map_err(transport)?;
        // The alerts are stored once the status says so; an odd body does not undo that.
        let ids: Result<Vec<String>, LapiError> = read_success(response, SMALL_BODY_MAX_BYTES);
        match ids {
            Ok(ids) => Ok(ids.len()),
            Err(LapiError::Unreadable(_)) => Ok(alerts.len()),
            Err(error) => Err(error),
        }
    }

    /// `DELETE /v1/decisions`: the `ban`s nfsentry made on `address` under `scenario`, and
    /// nothing else on it (another origin's decision on the same address stays); the number
    /// deleted.
    pub fn delete_decisions(
        &self,
        token: &str,
        address: IpAddr,
        scenario: &str,
    ) -> Result<u64, LapiError> {
        let response = self
            .agent
            .delete(self.url.endpoint("v1/decisions"))
            .query("ip", wire::canonical(address).to_string())
            // The 1.4.6 delete filters are named `scopes` and `origin`, whatever the swagger
            // says; `scope` is refused as an unknown filter.
            .query("scopes", wire::SCOPE_IP)
            .query("type", wire::BAN)
            .query("origin", wire::ORIGIN)
            .query("scenario", scenario)
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .map_err(transport)?;
        #[derive(serde::Deserialize)]
        struct Deleted {
            #[serde(rename = "nbDeleted", default)]
            deleted: Option<String>,
        }
        let reply: Result<Deleted, LapiError> = read_success(response, SMALL_BODY_MAX_BYTES);
        match reply {
            Ok(reply) => Ok(reply
                .deleted
                .and_then(|count| count.parse().ok())
                .unwrap_or(0)),
            Err(LapiError::Unreadable(_)) => Ok(0),
            Err(error) => Err(error),
        }
    }

    /// `GET /v1/decisions/stream?startup=false`: the changes since this bouncer's last pull.
    pub fn delta(&self, key: &Secret) -> Result<Delta, LapiError> {
        let response = self
            .agent
            .get(self.url.endpoint("v1/decisions/stream"))
            .query("startup", "false")
            .header("X-Api-Key", key.expose())
            .call()
            .map_err(transport)?;
        read_success(response, SMALL_BODY_MAX_BYTES)
    }

    /// `GET /v1/decisions/stream?startup=true`: every active decision.
    pub fn full_list(&self, key: &Secret) -> Result<FullList, LapiError> {
        let response = self
            .agent
            .get(self.url.endpoint("v1/decisions/stream"))
            .query("startup", "true")
            .header("X-Api-Key", key.expose())
            .config()
            .timeout_global(Some(self.timeouts.full_list))
            .build()
            .call()
            .map_err(transport)?;
        read_success(response, FULL_BODY_MAX_BYTES)
    }
}

/// A call that got no answer.
fn transport(error: ureq::Error) -> LapiError {
    LapiError::Unreachable(error.to_string())
}

/// The body of a 2xx answer as `T`; an error for any other status.
fn read_success<T: serde::de::DeserializeOwned>(
    mut response: Response<Body>,
    limit: u64,
) -> Result<T, LapiError> {
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(status_error(status, response));
    }
    response
        .body_mut()
        .with_config()
        .limit(limit)
        .read_json()
        .map_err(|error| match error {
            ureq::Error::Json(error) => LapiError::Unreadable(error.to_string()),
            ureq::Error::BodyExceedsLimit(limit) => {
                LapiError::Unreadable(format!("the answer is larger than {limit} bytes"))
            }
            // The answer was cut off: the connection, not the content, failed.
            other => LapiError::Unreachable(other.to_string()),
        })
}

fn status_error(status: u16, mut response: Response<Body>) -> LapiError {
    let body = response
        .body_mut()
        .with_config()
        .limit(ERROR_BODY_MAX_BYTES)
        .read_to_string()
        .unwrap_or_default();
    let message = error_message(&body);
    match status {
        401 | 403 => LapiError::Refused { status, message },
        500 if message.contains("database is locked") => LapiError::Busy { status, message },
        _ => LapiError::Status { status, message },
    }
}

/// The `message` of a LAPI error body (`{"message": "..."}`), or the body itself, on one line
/// and cut short.
fn error_message(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        message: Option<String>,
    }
    let text = serde_json::from_str::<ErrorBody>(body)
        .ok()
        .and_then(|error| error.message)
        .unwrap_or_else(|| body.to_owned());
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MESSAGE_MAX_CHARS)
        .collect();
    let one_line = one_line.trim().to_owned();
    if one_line.is_empty() {
        "no message".to_owned()
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_one_short_line() {
        assert_eq!(
            error_message(r#"{"code":401,"message":"incorrect Username or Password"}"#),
            "incorrect Username or Password"
        );
        assert_eq!(
            error_message(r#"{"message":"'scope' doesn't exist: invalid filter"}"#),
            "'scope' doesn't exist: invalid filter"
        );
        assert_eq!(error_message("bad\ngateway\r\n"), "bad gateway");
        assert_eq!(error_message(""), "no message");
        assert_eq!(error_message(&"x".repeat(1_000)).len(), MESSAGE_MAX_CHARS);
    }

    /// A closed port on loopback answers at once: unreachable, not a hang.
    #[test]
    fn a_closed_port_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = crate::config::Config::from_toml(
            &format!(
                "[crowdsec]\nurl = \"http://127.0.0.1:{port}/\"\npush = false\npull = false\n"
            ),
            std::path::Path::new("/tmp/x.toml"),
        )
        .unwrap()
        .crowdsec
        .unwrap()
        .url;
        let client = Client::new(url, Timeouts::default());
        let started = std::time::Instant::now();
        let error = client.delete_decisions("t", "192.0.2.7".parse().unwrap(), "s");
        assert!(matches!(error, Err(LapiError::Unreachable(_))), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
