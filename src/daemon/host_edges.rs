//! The daemon's two edges for spoofing: following what the host is (its addresses and routers,
//! through [`HostWatch`]) and sending the handshake check's replies (through [`Injector`]). Each
//! is a small struct the packet loop polls or calls; neither decides anything.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use crate::config::{Config, Verify};
use crate::cookie::{Cookies, DEFAULT_SLOT};
use crate::error_text::with_causes;
use crate::handshake::{Handshakes, DEFAULT_CHALLENGES_PER_SECOND};
use crate::host;
use crate::host_watch::HostWatch;
use crate::inject::{Injector, REPLY_MARK};
use crate::pipeline::Reply;
use crate::spoof::HostFacts;

/// At most one line per this long about replies that could not be sent: a flood that fills the
/// socket buffer must not flood the log as well.
const SEND_FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);
/// Addresses named at most in the line that says what changed.
const ADDRESSES_LOGGED_MAX: usize = 32;

/// Follows the host's addresses, routers and broadcasts through rtnetlink notifications. Without
/// rtnetlink (which should not happen) it falls back to the addresses as they are at start.
pub(super) struct HostFollower {
    watch: Option<HostWatch>,
}

impl HostFollower {
    /// Opens the watch in the daemon's network namespace; needs no privilege.
    pub(super) fn open() -> (HostFollower, HostFacts) {
        match HostWatch::open() {
            Ok((watch, facts)) => (HostFollower { watch: Some(watch) }, facts),
            Err(e) => {
                warn!(
                    "{}; addresses are read once, and routers are not protected",
                    with_causes(&e)
                );
                let facts = HostFacts {
                    local: host::local_addresses(),
                    ..HostFacts::default()
                };
                (HostFollower { watch: None }, facts)
            }
        }
    }

    /// The socket to poll for readability.
    pub(super) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.watch.as_ref().map(HostWatch::fd)
    }

    /// The facts when they changed since last asked; call when [`fd`](Self::fd) is readable.
    /// A failed read dumps everything again; if that fails too, the last facts stay in force.
    pub(super) fn changed(&mut self) -> Option<HostFacts> {
        let watch = self.watch.as_mut()?;
        let facts = match watch.drain() {
            Ok(changed) => changed?,
            Err(e) => {
                error!("{}; reading addresses and routes again", with_causes(&e));
                match watch.resync() {
                    Ok(facts) => facts,
                    Err(e) => {
                        error!("{}", with_causes(&e));
                        return None;
                    }
                }
            }
        };
        info!(
            "host addresses or routers changed; never counted nor blocked now: addresses {}; routers {}",
            some_addresses(&facts.local),
            some_addresses(&facts.next_hops)
        );
        Some(facts)
    }
}

fn some_addresses(list: &[std::net::IpAddr]) -> String {
    let mut text: Vec<String> = list
        .iter()
        .take(ADDRESSES_LOGGED_MAX)
        .map(ToString::to_string)
        .collect();
    if list.len() > ADDRESSES_LOGGED_MAX {
        text.push(format!("and {} more", list.len() - ADDRESSES_LOGGED_MAX));
    }
    match text.is_empty() {
        true => "none".to_owned(),
        false => text.join(", "),
    }
}

/// Sends the handshake check's replies through marked raw sockets; counts what could not be sent.
pub(super) struct ReplySender {
    injector: Injector,
    failed: u64,
    failed_since_logged: u64,
    next_log: Instant,
}

impl ReplySender {
    /// With `verify = "handshake"`: the raw sockets (opened now, while the process still has
    /// CAP_NET_RAW) and the check with a fresh secret. None with `verify = "off"`, or when the
    /// sockets or the secret cannot be had: then nothing is challenged and every block stays
    /// unverified, which is said once here.
    pub(super) fn open(config: &Config, now: Instant) -> Option<(ReplySender, Handshakes)> {
        if config.detect.verify != Verify::Handshake {
            return None;
        }
        let unverified = "verify = \"handshake\" is off for this run: no SYN is challenged and every block is unverified";
        let injector = match Injector::open(REPLY_MARK) {
            Ok(injector) => injector,
            Err(e) => {
                error!("{}; {unverified}", with_causes(&e));
                return None;
            }
        };
        let cookies = match Cookies::generate(DEFAULT_SLOT, now) {
            Ok(cookies) => cookies,
            Err(e) => {
                error!("{}; {unverified}", with_causes(&e));
                return None;
            }
        };
        let banner = config.respond.port_banner.as_deref().unwrap_or("");
        let handshakes = Handshakes::new(cookies, banner.as_bytes(), DEFAULT_CHALLENGES_PER_SECOND);
        let sender = ReplySender {
            injector,
            failed: 0,
            failed_since_logged: 0,
            next_log: now,
        };
        Some((sender, handshakes))
    }

    /// Sends each reply; never blocks. Failures (a full socket buffer under a flood) are
    /// counted and reported at most once a minute.
    pub(super) fn send(&mut self, replies: &[Reply], now: Instant) {
        for reply in replies {
            let Err(e) = self.injector.send(&reply.packet, reply.ifindex) else {
                continue;
            };
            self.failed += 1;
            self.failed_since_logged += 1;
            if now >= self.next_log {
                warn!(
                    "{} handshake replies could not be sent ({} since start), the last: {}",
                    self.failed_since_logged,
                    self.failed,
                    with_causes(&e)
                );
                self.failed_since_logged = 0;
                self.next_log = now + SEND_FAILURE_LOG_EVERY;
            }
        }
    }
}
