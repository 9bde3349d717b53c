//! The `nfsentry` command: parses the command line, loads the config, and hands over to the
//! daemon or prints what was asked. Exit codes are decided here and nowhere else.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use log::{error, LevelFilter};

use nfsentry::config::{self, Config};
use nfsentry::control::{self, protocol::Request};
use nfsentry::nft::ruleset::{self, QueueMode, RulesetSpec};
use nfsentry::{daemon, firewall, host, import_portsentry, logging, respond};

/// Port-scan detector and inline blocker for nftables/NFQUEUE.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the rules and watch for scans, in the foreground, until SIGINT or SIGTERM.
    Run {
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Log debug detail too.
        #[arg(long)]
        verbose: bool,
    },
    /// Validate the configuration: a one-line summary, or the error with file and line.
    CheckConfig {
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Translate a PortSentry portsentry.conf into nfsentry.toml on stdout; what cannot be
    /// carried over is named on stderr, with the reason.
    ImportPortsentry {
        #[arg(value_name = "PORTSENTRY_CONF")]
        path: PathBuf,
    },
    /// Show the running daemon's state: queues, packets, detections, blocks, kernel counters.
    Status {
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// List the blocked addresses: scan type, target, since, time left, verified, actions.
    List {
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Block an address by hand through every configured action; in force when this returns.
    Block {
        address: IpAddr,
        /// How long ("90s", "1h", "7d"; "0" until released); default: respond.block_timeout.
        #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
        timeout: Option<Duration>,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Lift the block of an address through every action; in force when this returns.
    Unblock {
        address: IpAddr,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Lift every block.
    Flush {
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Re-read the configuration and apply it, as SIGHUP does; a bad file is refused.
    Reload {
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Print the nft ruleset that `run` would install.
    Rules {
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Print the commands and changes each blocking action makes instead.
        #[arg(long, conflicts_with = "blocked_sets")]
        actions: bool,
        /// Print the sets to load into your own table for `respond.blocked_table` instead.
        #[arg(long)]
        blocked_sets: bool,
    },
}

/// How the control commands find the daemon and print its answer.
#[derive(clap::Args)]
struct DaemonArgs {
    /// The config whose `daemon.control_socket` to use.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print the answer as JSON, for scripts.
    #[arg(long)]
    json: bool,
}

/// sysexits' EX_CONFIG: systemd units stop restarting on it.
const EXIT_BAD_CONFIG_RUN: u8 = 78;
/// The documented exit status of `check-config` for a bad file.
const EXIT_BAD_CONFIG_CHECK: u8 = 2;
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, verbose } => {
            let config = match load_checked(config) {
                Ok(c) => c,
                Err(refusals) => {
                    for refusal in refusals {
                        eprintln!("nfsentry: {refusal}");
                    }
                    return ExitCode::from(EXIT_BAD_CONFIG_RUN);
                }
            };
            let level = if verbose {
                LevelFilter::Debug
            } else {
                LevelFilter::Info
            };
            if let Err(e) = logging::init(&config.daemon.log, level) {
                eprintln!("nfsentry: {e}");
                return ExitCode::from(EXIT_BAD_CONFIG_RUN);
            }
            let result = daemon::run(config);
            let code = match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            };
            logging::flush();
            code
        }
        Command::CheckConfig { config } => match load_checked(config) {
            Ok(c) => {
                println!("{}", c.summary());
                if let Some(warning) = blocked_sets_warning(&c) {
                    eprintln!("nfsentry: {warning}");
                }
                ExitCode::SUCCESS
            }
            Err(refusals) => {
                for refusal in refusals {
                    eprintln!("nfsentry: {refusal}");
                }
                ExitCode::from(EXIT_BAD_CONFIG_CHECK)
            }
        },
        Command::ImportPortsentry { path } => import_portsentry(&path),
        Command::Status { daemon } => ask_daemon(daemon, Request::Status),
        Command::List { daemon } => ask_daemon(daemon, Request::List),
        Command::Block {
            address,
            timeout,
            daemon,
        } => ask_daemon(
            daemon,
            Request::Block {
                address,
                timeout_secs: timeout.map(|t| t.as_secs()),
            },
        ),
        Command::Unblock { address, daemon } => ask_daemon(daemon, Request::Unblock { address }),
        Command::Flush { daemon } => ask_daemon(daemon, Request::Flush),
        Command::Reload { daemon } => ask_daemon(daemon, Request::Reload),
        Command::Rules {
            config,
            actions,
            blocked_sets,
        } => match load(config) {
            Ok(c) if blocked_sets => {
                let table = c.respond.blocked_table.as_deref();
                print!(
                    "{}",
                    ruleset::render_blocked_sets(table.unwrap_or(ruleset::EXAMPLE_BLOCKED_TABLE))
                );
                ExitCode::SUCCESS
            }
            Ok(c) if actions => {
                for line in respond::describe(&respond::build(&c.respond, &c.daemon.table)) {
                    println!("{line}");
                }
                ExitCode::SUCCESS
            }
            Ok(c) => {
                let devices = host::ingress_devices(&c);
                let spec = RulesetSpec::from_config(&c, devices);
                println!(
                    "# The ruleset `nfsentry run` installs (as one netlink transaction).\n\
                     # Kernels without nft_queue get the xt NFQUEUE target through nft compat\n\
                     # instead of `queue`; `nft list ruleset` shows both as `queue ... bypass`."
                );
                print!("{}", ruleset::render(&spec, QueueMode::Native));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("nfsentry: {e}");
                ExitCode::from(EXIT_BAD_CONFIG_CHECK)
            }
        },
    }
}

/// A control command: finds the socket through the config, asks, prints the answer. Exit 0 when
/// the daemon carried it out, 1 when it refused or could not be reached, with one line on
/// standard error saying why.
fn ask_daemon(args: DaemonArgs, request: Request) -> ExitCode {
    let config = match load(args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("nfsentry: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG_CHECK);
        }
    };
    let path = &config.daemon.control_socket;
    let answer = match control::client::ask(path, &request, control::client::ANSWER_TIMEOUT) {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("nfsentry: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match control::render::render(&answer, args.json, now) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("nfsentry: {reason}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `nfsentry import-portsentry FILE`: the TOML on stdout, one line per note on stderr, exit 0;
/// an unreadable file is `FILE: ...` and exit 2, like a bad config.
fn import_portsentry(path: &Path) -> ExitCode {
    let imported = match import_portsentry::import_file(path) {
        Ok(imported) => imported,
        Err(e) => {
            eprintln!("nfsentry: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG_CHECK);
        }
    };
    if let Err(e) = &imported.self_check {
        eprintln!("nfsentry: the imported configuration does not load (a bug in the import): {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    print!("{}", imported.toml);
    let name = path.display().to_string();
    for note in &imported.notes {
        eprintln!("{}", note.render(&name));
    }
    ExitCode::SUCCESS
}

/// The configuration `check-config` approves and `run` starts with: the file loads, and every
/// configured action finds what it needs (its program, a writable file, a gateway that is not
/// this host). One function for both, and for a reload of the running daemon, so the daemon
/// never takes a value the check refuses, only to fail every block afterwards. Each refusal is
/// one line naming the file.
fn load_checked(path: Option<PathBuf>) -> Result<Config, Vec<String>> {
    let config = load(path).map_err(|e| vec![e.to_string()])?;
    let problems = daemon::reload::problems(&config);
    match problems.is_empty() {
        true => Ok(config),
        false => Err(problems),
    }
}

/// What `check-config` says when the admin's table named by `respond.blocked_table` lacks the
/// blocked sets, or cannot be read: a warning, not a refusal, since the daemon runs without
/// them (keeping the blocks in its journal until they appear) and the admin's ruleset may well
/// be loaded after nfsentry is checked. Names the file, the line, the key and the value.
fn blocked_sets_warning(config: &Config) -> Option<String> {
    let admin = config.respond.blocked_table.as_deref()?;
    let place = match &config.origin {
        config::Origin::File(path) => {
            let line = std::fs::read_to_string(path).ok().and_then(|text| {
                text.lines()
                    .position(|line| line.trim_start().starts_with("blocked_table"))
            });
            match line {
                Some(index) => format!("{}:{}", path.display(), index + 1),
                None => path.display().to_string(),
            }
        }
        config::Origin::Defaults => "built-in defaults".to_owned(),
    };
    let value = format!("respond.blocked_table: \"inet {admin}\"");
    match firewall::missing_blocked_sets(admin) {
        Ok(missing) if missing.is_empty() => None,
        Ok(missing) => Some(format!(
            "{place}: {value}: table inet {admin} has no set {} now: nfsentry keeps the blocks in \
             its journal and puts them in once the sets exist; load them with your ruleset \
             (`nfsentry rules --blocked-sets` prints them)",
            missing.join(" nor ")
        )),
        Err(e) => Some(format!(
            "{place}: {value}: cannot read the sets of table inet {admin}: {}",
            nfsentry::error_text::with_causes(&e)
        )),
    }
}

/// An explicit path must exist; the default path may be absent, and then the built-in
/// defaults apply (the daemon says so in its first log line).
fn load(path: Option<PathBuf>) -> Result<Config, config::ConfigError> {
    match path {
        Some(path) => Config::load(&path),
        None => {
            let default = PathBuf::from(config::DEFAULT_PATH);
            if default.exists() {
                Config::load(&default)
            } else {
                Ok(Config::defaults())
            }
        }
    }
}
