//! One line for an error and everything that caused it, for logs and for the text-only
//! errors actions report: thiserror keeps causes as `source()`, out of `Display`.

use std::error::Error;

/// `outer: cause: root cause`.
pub fn with_causes(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot bind queue 0")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_follow_the_error_on_one_line() {
        let e = Outer(std::io::Error::from_raw_os_error(libc::EPERM));
        let text = with_causes(&e);
        assert!(
            text.starts_with("cannot bind queue 0: Operation not permitted"),
            "{text}"
        );
    }
}
