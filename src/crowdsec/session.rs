//! When the watcher's JWT must be renewed. The LAPI's login answer says when the token expires
//! (an hour on), by the LAPI's clock; the token is renewed a few minutes before that, by our
//! monotonic clock, and at once after a 401. Pure: times in, a deadline out.

use std::time::{Duration, Instant, SystemTime};

/// What a 1.4.6 LAPI grants, and what is assumed when its answer says nothing readable.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3_600);
/// Renew this long before the end, so that a slow call never carries a token that dies on
/// the way.
pub const RENEW_AHEAD: Duration = Duration::from_secs(300);
/// Never trust a token for less than this: logging in again at once would not help, and a 401
/// renews it anyway.
const MIN_TRUST: Duration = Duration::from_secs(60);

/// The watcher's token, while it is good.
#[derive(Clone)]
pub struct Token {
    value: String,
    renew_at: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A JWT is a credential for an hour; it never prints.
        formatter
            .debug_struct("Token")
            .field("renew_at", &self.renew_at)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// A token obtained at `obtained` (monotonic) when the wall clock read `wall_now`, with the
    /// LAPI's `expire` if it gave a readable one.
    pub fn new(
        value: String,
        obtained: Instant,
        wall_now: SystemTime,
        expire: Option<SystemTime>,
    ) -> Token {
        Token {
            value,
            renew_at: renewal_time(obtained, wall_now, expire),
        }
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    pub fn renew_at(&self) -> Instant {
        self.renew_at
    }

    /// Whether the token should be renewed before its next use.
    pub fn is_due(&self, now: Instant) -> bool {
        now >= self.renew_at
    }
}

/// When a token obtained at `obtained` should be renewed: its lifetime (from `expire`, capped
/// to [`TOKEN_LIFETIME`], at least [`MIN_TRUST`]) less [`RENEW_AHEAD`], or less half of it for
/// a lifetime too short for that. An `expire` already past by our clock means the clocks
/// disagree (the LAPI checks the token by its own): the usual lifetime is assumed.
pub fn renewal_time(
    obtained: Instant,
    wall_now: SystemTime,
    expire: Option<SystemTime>,
) -> Instant {
    let lifetime = expire
        .and_then(|expire| expire.duration_since(wall_now).ok())
        .unwrap_or(TOKEN_LIFETIME)
        .clamp(MIN_TRUST, TOKEN_LIFETIME);
    let ahead = RENEW_AHEAD.min(lifetime / 2);
    obtained + (lifetime - ahead)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewed_five_minutes_before_an_hour_is_up() {
        let obtained = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_564_518);
        let expire = wall + Duration::from_secs(3_600);
        let token = Token::new("jwt".into(), obtained, wall, Some(expire));
        assert_eq!(token.renew_at(), obtained + Duration::from_secs(3_300));
        assert!(!token.is_due(obtained + Duration::from_secs(3_299)));
        assert!(token.is_due(obtained + Duration::from_secs(3_300)));
        assert_eq!(token.value(), "jwt");
        assert!(!format!("{token:?}").contains("jwt"));
    }

    #[test]
    fn odd_expiries_fall_back_to_safe_lifetimes() {
        let obtained = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_564_518);
        let renew = |expire: Option<SystemTime>| renewal_time(obtained, wall, expire) - obtained;
        // Unreadable: the usual hour.
        assert_eq!(renew(None), Duration::from_secs(3_300));
        // Already past by our clock (the clocks disagree): the usual hour.
        assert_eq!(
            renew(Some(wall - Duration::from_secs(7_200))),
            Duration::from_secs(3_300)
        );
        // Very short: trusted for a minute, renewed at half.
        assert_eq!(
            renew(Some(wall + Duration::from_secs(5))),
            Duration::from_secs(30)
        );
        // Far in the future by our clock: no longer than the LAPI grants.
        assert_eq!(
            renew(Some(wall + Duration::from_secs(86_400))),
            Duration::from_secs(3_300)
        );
        // Short lifetimes renew at half.
        assert_eq!(
            renew(Some(wall + Duration::from_secs(240))),
            Duration::from_secs(120)
        );
    }
}
