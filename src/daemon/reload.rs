//! Reloading the configuration (SIGHUP and `nfsentry reload`): the file is read and checked
//! exactly as `check-config` does, and only then applied. What the running daemon set up once
//! at start (its table, queue, sockets, state, actions, table sizes) stays as it is until a
//! restart, and the reload says which of those changed.

use std::path::PathBuf;

use crate::config::{self, Config, Origin};
use crate::respond;

/// Loads the config `origin` names again (the built-in defaults stay the defaults unless the
/// default file has appeared since), and checks it as `check-config` does: the error or the
/// problems are the very lines `check-config` prints after `nfsentry: `, joined.
pub fn load_checked(origin: &Origin) -> Result<Config, String> {
    let loaded = match origin {
        Origin::File(path) => Config::load(path),
        Origin::Defaults => {
            let default = PathBuf::from(config::DEFAULT_PATH);
            match default.exists() {
                true => Config::load(&default),
                false => Ok(Config::defaults()),
            }
        }
    };
    let config = loaded.map_err(|e| e.to_string())?;
    let problems = problems(&config);
    match problems.is_empty() {
        true => Ok(config),
        false => Err(problems.join("\nnfsentry: ")),
    }
}

/// What `check-config` reports about a config that loads: each configured action's problems
/// (a tool missing, a file it cannot write), each prefixed with where the config came from.
pub fn problems(config: &Config) -> Vec<String> {
    let label = match &config.origin {
        Origin::File(path) => path.display().to_string(),
        Origin::Defaults => "built-in defaults".to_string(),
    };
    respond::check(&respond::build(&config.respond, &config.daemon.table))
        .into_iter()
        .map(|problem| format!("{label}: {problem}"))
        .collect()
}

/// What a reload applies: `fresh` with everything only a restart can change taken from
/// `running`, and the config keys of those that differ.
pub fn merge(running: &Config, fresh: Config) -> (Config, Vec<&'static str>) {
    let mut kept = Vec::new();
    let mut note = |changed: bool, key: &'static str| {
        if changed {
            kept.push(key);
        }
    };
    let (old, new) = (&running.daemon, &fresh.daemon);
    note(old.queue != new.queue, "daemon.queue");
    note(old.table != new.table, "daemon.table");
    note(old.state_dir != new.state_dir, "daemon.state_dir");
    note(
        old.control_socket != new.control_socket,
        "daemon.control_socket",
    );
    note(old.log != new.log, "daemon.log");
    note(old.interfaces != new.interfaces, "daemon.interfaces");
    note(old.nflog_group != new.nflog_group, "daemon.nflog_group");
    note(old.queue_mode != new.queue_mode, "daemon.queue_mode");
    note(
        old.keep_blocks_on_exit != new.keep_blocks_on_exit,
        "daemon.keep_blocks_on_exit",
    );
    let (old, new) = (&running.detect, &fresh.detect);
    note(old.window != new.window, "detect.window");
    note(old.max_sources != new.max_sources, "detect.max_sources");
    note(old.verify != new.verify, "detect.verify");
    let (old, new) = (&running.respond, &fresh.respond);
    note(
        old.max_blocks_per_sec != new.max_blocks_per_sec,
        "respond.max_blocks_per_sec",
    );
    let actions_changed = old.actions != new.actions
        || old.hosts_deny != new.hosts_deny
        || old.hosts_deny_line != new.hosts_deny_line
        || old.route != new.route
        || old.command != new.command
        || old.command_first != new.command_first
        || old.command_timeout != new.command_timeout
        || old.ipfilter_interface != new.ipfilter_interface
        || old.port_banner != new.port_banner;
    note(actions_changed, "respond.actions and their settings");
    note(
        running.respond.blocked_table != fresh.respond.blocked_table,
        "respond.blocked_table",
    );
    note(running.crowdsec != fresh.crowdsec, "[crowdsec]");

    let merged = Config {
        origin: fresh.origin,
        daemon: running.daemon.clone(),
        monitor: fresh.monitor,
        detect: config::Detect {
            window: running.detect.window,
            max_sources: running.detect.max_sources,
            verify: running.detect.verify,
            ..fresh.detect
        },
        respond: config::Respond {
            verdict: fresh.respond.verdict,
            block_timeout: fresh.respond.block_timeout,
            unverified_timeout: fresh.respond.unverified_timeout,
            max_blocks: fresh.respond.max_blocks,
            ..running.respond.clone()
        },
        crowdsec: running.crowdsec.clone(),
    };
    (merged, kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_reload_takes_ports_and_thresholds_and_keeps_what_needs_a_restart() {
        let running = Config::defaults();
        let mut fresh = Config::defaults();
        fresh.monitor = Config::from_toml("[monitor]\ntcp_ports = [1, 2]\n", "x.toml".as_ref())
            .unwrap()
            .monitor;
        fresh.detect.scan_trigger = 5;
        fresh.respond.block_timeout = Some(Duration::from_secs(60));
        fresh.daemon.queue = crate::config::QueueRange::single(9);
        fresh.detect.window = Duration::from_secs(1);
        let (merged, kept) = merge(&running, fresh.clone());
        assert_eq!(merged.monitor, fresh.monitor);
        assert_eq!(merged.detect.scan_trigger, 5);
        assert_eq!(merged.respond.block_timeout, Some(Duration::from_secs(60)));
        assert_eq!(merged.daemon.queue, running.daemon.queue);
        assert_eq!(merged.detect.window, running.detect.window);
        assert_eq!(kept, ["daemon.queue", "detect.window"]);

        let (_, nothing) = merge(&running, running.clone());
        assert!(nothing.is_empty());
    }

    #[test]
    fn a_bad_file_is_refused_with_check_configs_words() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nfsentry.toml");
        std::fs::write(&path, "[detect]\nscan_trigger = \"many\"\n").unwrap();
        let refused = load_checked(&Origin::File(path.clone())).unwrap_err();
        let expected = Config::load(&path).unwrap_err().to_string();
        assert_eq!(refused, expected);
        assert!(refused.contains("nfsentry.toml:2"), "{refused}");
    }
}
