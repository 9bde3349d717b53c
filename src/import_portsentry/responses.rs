//! Maps PortSentry's responses (BLOCK_TCP/UDP, KILL_HOSTS_DENY, KILL_ROUTE, KILL_RUN_CMD and
//! KILL_RUN_CMD_FIRST) to nfsentry's `[respond]` actions and their settings. A response nfsentry
//! cannot run as PortSentry did, or that this machine cannot run at all, becomes a note; it
//! never becomes a setting that `check-config` would refuse.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::conf::Settings;
use super::kill_route::{self, KillRoute};
use super::map::{accepted, at};
use super::out::{Section, TomlOut};
use super::words::{self, ShellSyntax};
use super::{quoted, Note, NoteKind, Surroundings};
use crate::config::{ActionKind, RouteTarget};
use crate::respond::hosts_deny::HostsDenyAction;
use crate::respond::legacy::LegacyTool;

/// What BLOCK_TCP / BLOCK_UDP asked for, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Block {
    /// 0: log only.
    AlertOnly,
    /// 2: run KILL_RUN_CMD only.
    CommandOnly,
    /// 1: every response.
    Respond,
}

/// Each response PortSentry had, as nfsentry settings.
#[derive(Debug, Default)]
struct Responses {
    hosts_deny_line: Option<String>,
    /// KILL_ROUTE's action when it is a route or a firewall recipe (as a plain command it is
    /// `command`).
    route_action: Option<ActionKind>,
    route: Option<RouteTarget>,
    ipfilter_interface: Option<String>,
    /// The argv of the `command` action, and whether it is KILL_RUN_CMD's (not KILL_ROUTE's).
    command: Option<(Vec<String>, bool)>,
    command_first: bool,
}

/// Writes `[respond]`: how long blocks last, the actions, and what each action needs.
pub(super) fn respond(
    settings: &Settings,
    around: &dyn Surroundings,
    out: &mut TomlOut,
    notes: &mut Vec<Note>,
) {
    let block = block_setting(settings, notes);
    let mut responses = Responses {
        hosts_deny_line: hosts_deny_line(settings, notes),
        ..Responses::default()
    };
    let run_cmd = run_cmd(settings, around, notes);
    kill_route_into(settings, around, run_cmd.is_some(), &mut responses, notes);
    if let Some(argv) = run_cmd {
        responses.command = Some((argv, true));
        responses.command_first = settings.value("KILL_RUN_CMD_FIRST").map(str::trim) == Some("1");
    } else if let Some(first) = settings.get("KILL_RUN_CMD_FIRST") {
        if first.value.trim() == "1" {
            notes.push(Note::conf(
                first.line,
                "KILL_RUN_CMD_FIRST",
                NoteKind::NotMapped,
                "there is no KILL_RUN_CMD carried over for it to run first",
            ));
        }
    }

    let full: Vec<ActionKind> = [
        responses
            .hosts_deny_line
            .as_ref()
            .map(|_| ActionKind::HostsDeny),
        responses.route_action,
        responses.command.as_ref().map(|_| ActionKind::Command),
    ]
    .into_iter()
    .flatten()
    .collect();
    let run_cmd_only: Vec<ActionKind> = match &responses.command {
        Some((_, true)) => vec![ActionKind::Command],
        _ => Vec::new(),
    };
    let written = |kinds: &[ActionKind]| {
        toml::Value::Array(kinds.iter().map(|kind| kind.as_str().into()).collect())
    };
    let modes = block_words(settings);
    out.comment(
        Section::Respond,
        "PortSentry never lifted a block; with block_timeout = \"0\" neither does nfsentry. \
         A duration such as \"7d\" lifts each block when it runs out.",
    );
    out.key(Section::Respond, "block_timeout", "0".into());
    out.blank(Section::Respond);
    match block {
        Block::Respond if full.is_empty() => out.comment(
            Section::Respond,
            format!(
                "{modes}: PortSentry answered scans, but no KILL_HOSTS_DENY, KILL_ROUTE or \
                 KILL_RUN_CMD was carried over, so this only logs."
            ),
        ),
        Block::Respond => out.comment(
            Section::Respond,
            format!(
                "{modes}: scans are answered with PortSentry's responses, in its order \
                 (KILL_HOSTS_DENY, KILL_ROUTE, KILL_RUN_CMD; command_first moves the command to \
                 the front)."
            ),
        ),
        Block::CommandOnly if run_cmd_only.is_empty() => out.comment(
            Section::Respond,
            format!(
                "{modes}: PortSentry ran KILL_RUN_CMD alone, and none was carried over, so \
                 this only logs."
            ),
        ),
        Block::CommandOnly => out.comment(
            Section::Respond,
            format!("{modes}: PortSentry ran KILL_RUN_CMD alone, and so does this list."),
        ),
        Block::AlertOnly if full.is_empty() => out.comment(
            Section::Respond,
            format!("{modes}: PortSentry only logged, and so does nfsentry with no actions."),
        ),
        Block::AlertOnly => out.comment(
            Section::Respond,
            format!(
                "{modes}: PortSentry only logged, and so does nfsentry with no actions. The \
                 settings below keep PortSentry's responses; BLOCK_TCP=\"1\" would have run \
                 them as:"
            ),
        ),
    }
    if block == Block::AlertOnly && !full.is_empty() {
        out.commented_key(Section::Respond, "actions", written(&full));
    }
    out.comment(
        Section::Respond,
        "nfsentry's own \"nft-set\" action blocks in the kernel before the scanner learns \
         anything and is undone when a block ends; add it first in the list to use it.",
    );
    let actions = match block {
        Block::Respond => full,
        Block::CommandOnly => run_cmd_only,
        Block::AlertOnly => Vec::new(),
    };
    out.key(Section::Respond, "actions", written(&actions));
    write_responses(settings, &responses, out);
}

fn write_responses(settings: &Settings, responses: &Responses, out: &mut TomlOut) {
    if let Some(line) = &responses.hosts_deny_line {
        out.comment(
            Section::Respond,
            format!(
                "From KILL_HOSTS_DENY{}, for the \"hosts-deny\" action, which writes to \
                 hosts_deny (/etc/hosts.deny, as PortSentry did) and removes its line again \
                 when a block ends.",
                at(settings, "KILL_HOSTS_DENY")
            ),
        );
        out.key(Section::Respond, "hosts_deny_line", line.as_str().into());
    }
    if let Some(route) = responses.route {
        out.comment(
            Section::Respond,
            format!(
                "From KILL_ROUTE{}, for the \"route\" action: a route added through netlink, \
                 tagged as nfsentry's, where PortSentry ran the route command (a reject route \
                 becomes a blackhole: replies to the scanner vanish).",
                at(settings, "KILL_ROUTE")
            ),
        );
        out.key(Section::Respond, "route", route.to_string().into());
    }
    if let Some(action) = responses
        .route_action
        .filter(|action| *action != ActionKind::Route)
    {
        out.comment(
            Section::Respond,
            format!(
                "KILL_ROUTE{} is PortSentry's {action} recipe, nfsentry's \"{action}\" action: \
                 the same rule, with the tool found on PATH wherever the recipe said it was, run \
                 without a shell, and removed again when a block ends.",
                at(settings, "KILL_ROUTE")
            ),
        );
    }
    if let Some(interface) = &responses.ipfilter_interface {
        out.key(
            Section::Respond,
            "ipfilter_interface",
            interface.as_str().into(),
        );
    }
    if let Some((argv, from_run_cmd)) = &responses.command {
        let key = if *from_run_cmd {
            "KILL_RUN_CMD"
        } else {
            "KILL_ROUTE"
        };
        out.comment(
            Section::Respond,
            format!(
                "From {key}{}, for the \"command\" action. nfsentry runs it directly, never \
                 through a shell, with $TARGET$, $PORT$ and $MODE$ filled in inside each \
                 argument; $MODE$ is the protocol (tcp, udp), where PortSentry passed its mode \
                 (tcp, stcp, atcp, ...). It runs once per block and is killed after \
                 command_timeout.",
                at(settings, key)
            ),
        );
        let argv: Vec<toml::Value> = argv.iter().map(|arg| arg.as_str().into()).collect();
        out.key(Section::Respond, "command", toml::Value::Array(argv));
        out.key(
            Section::Respond,
            "command_first",
            responses.command_first.into(),
        );
    }
    if let Some(banner) = settings.get("PORT_BANNER").filter(|s| !s.value.is_empty()) {
        out.comment(
            Section::Respond,
            format!(
                "From PORT_BANNER{}. Accepted, but never sent: nfsentry completes no handshake \
                 on a bait port.",
                at(settings, "PORT_BANNER")
            ),
        );
        out.key(
            Section::Respond,
            "port_banner",
            banner.value.as_str().into(),
        );
    }
}

/// The stronger of BLOCK_TCP and BLOCK_UDP: nfsentry has one list of actions for both.
fn block_setting(settings: &Settings, notes: &mut Vec<Note>) -> Block {
    let tcp = block_mode(settings, "BLOCK_TCP", notes);
    let udp = block_mode(settings, "BLOCK_UDP", notes);
    if tcp != udp {
        let (weaker, stronger) = if tcp < udp {
            ("BLOCK_TCP", "BLOCK_UDP")
        } else {
            ("BLOCK_UDP", "BLOCK_TCP")
        };
        notes.push(Note {
            file: None,
            line: settings.line(weaker),
            key: weaker.to_owned(),
            kind: NoteKind::NotMapped,
            reason: format!(
                "nfsentry answers TCP and UDP scans with one list of actions; it follows \
                 {stronger}=\"{}\" here, so {} scans are answered the same way. Spoofed \
                 sources are the risk PortSentry warned of: keep the ignore list complete, and \
                 consider a block_timeout",
                settings.value(stronger).unwrap_or_default().trim(),
                &weaker[6..]
            ),
        });
    }
    tcp.max(udp)
}

/// PortSentry 1.2's reading: "1" responds, "2" runs the command only, anything else (or
/// nothing) only logs.
fn block_mode(settings: &Settings, key: &str, notes: &mut Vec<Note>) -> Block {
    let Some(setting) = settings.get(key) else {
        return Block::AlertOnly;
    };
    match setting.value.trim() {
        "1" => Block::Respond,
        "2" => Block::CommandOnly,
        "0" => Block::AlertOnly,
        other => {
            notes.push(Note::conf(
                setting.line,
                key,
                NoteKind::MappedInPart,
                format!(
                    "{} is none of 0, 1, 2; PortSentry 1.2 read it as 0 (log only), and so \
                     does this import",
                    quoted(other)
                ),
            ));
            Block::AlertOnly
        }
    }
}

/// `BLOCK_TCP="1" and BLOCK_UDP="0"` for the comments.
fn block_words(settings: &Settings) -> String {
    let word = |key: &str| match settings.value(key) {
        Some(value) => format!("{key}={}", quoted(value)),
        None => format!("{key} unset"),
    };
    format!("{} and {}", word("BLOCK_TCP"), word("BLOCK_UDP"))
}

/// KILL_HOSTS_DENY as `hosts_deny_line`, if nfsentry's hosts-deny action accepts it.
fn hosts_deny_line(settings: &Settings, notes: &mut Vec<Note>) -> Option<String> {
    let setting = settings
        .get("KILL_HOSTS_DENY")
        .filter(|s| !s.value.is_empty())?;
    let line = setting.value.as_str();
    let mut refuse = |reason: String| {
        notes.push(Note::conf(
            setting.line,
            "KILL_HOSTS_DENY",
            NoteKind::NotMapped,
            reason,
        ));
        None
    };
    if !line.contains("$TARGET$") {
        return refuse("it has no $TARGET$, so PortSentry refused to write it".to_owned());
    }
    if line.contains("$PORT$") || line.contains("$MODE$") {
        return refuse(
            "nfsentry fills in $TARGET$ alone in hosts_deny_line (one line per address, \
             removed again when the block ends), where PortSentry also filled in $PORT$ and \
             $MODE$"
                .to_owned(),
        );
    }
    if let Err(problem) = accepted("respond", "hosts_deny_line", &line.into()) {
        return refuse(format!("nfsentry refuses it: {problem}"));
    }
    let action = HostsDenyAction::new(PathBuf::from("/etc/hosts.deny"), line.to_owned());
    let samples = [
        IpAddr::from([192, 0, 2, 1]),
        IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]),
    ];
    if let Some(error) = samples
        .iter()
        .find_map(|sample| action.line_for(*sample).err())
    {
        return refuse(format!("nfsentry refuses it: {error}"));
    }
    Some(line.to_owned())
}

/// KILL_RUN_CMD as the `command` argv.
fn run_cmd(
    settings: &Settings,
    around: &dyn Surroundings,
    notes: &mut Vec<Note>,
) -> Option<Vec<String>> {
    let setting = settings
        .get("KILL_RUN_CMD")
        .filter(|s| !s.value.is_empty())?;
    match words::split(&setting.value) {
        Ok(argv) => command(setting.line, "KILL_RUN_CMD", argv, around, notes),
        Err(ShellSyntax(what)) => {
            notes.push(Note::conf(
                setting.line,
                "KILL_RUN_CMD",
                NoteKind::NotMapped,
                format!(
                    "it uses {what}. PortSentry ran it through /bin/sh -c with the address \
                     pasted in; nfsentry runs the command's argv directly, so nothing in an \
                     address or port can reach a shell. Put the shell part in a script and set \
                     respond.command = [\"/path/to/script\", \"$TARGET$\", \"$PORT$\", \
                     \"$MODE$\"]"
                ),
            ));
            None
        }
    }
}

/// An argv as nfsentry's `command`: the program by absolute path (looked up on PATH when the
/// string named it bare), executable here, and accepted by nfsentry's loader.
fn command(
    line: usize,
    key: &str,
    mut argv: Vec<String>,
    around: &dyn Surroundings,
    notes: &mut Vec<Note>,
) -> Option<Vec<String>> {
    let mut refuse = |reason: String| {
        notes.push(Note::conf(line, key, NoteKind::NotMapped, reason));
        None
    };
    let Some(program) = argv.first_mut() else {
        return refuse("it names no program".to_owned());
    };
    if !program.contains('/') {
        match around.find_program(program) {
            Some(path) => *program = path.display().to_string(),
            None => {
                return refuse(format!(
                    "{} is not found on PATH here, and nfsentry runs programs by absolute path",
                    quoted(program)
                ))
            }
        }
    }
    if !Path::new(program.as_str()).is_absolute() {
        return refuse(format!(
            "{} is a relative path; nfsentry runs programs by absolute path",
            quoted(program)
        ));
    }
    if !around.is_executable(Path::new(program.as_str())) {
        return refuse(format!(
            "{program} is not an executable file here, so nfsentry's check-config would refuse \
             it"
        ));
    }
    let value = toml::Value::Array(argv.iter().map(|arg| arg.as_str().into()).collect());
    if let Err(problem) = accepted("respond", "command", &value) {
        return refuse(format!("nfsentry refuses it: {problem}"));
    }
    Some(argv)
}

/// KILL_ROUTE into `responses`; `command_taken` when KILL_RUN_CMD has the `command` action.
fn kill_route_into(
    settings: &Settings,
    around: &dyn Surroundings,
    command_taken: bool,
    responses: &mut Responses,
    notes: &mut Vec<Note>,
) {
    let Some(setting) = settings.get("KILL_ROUTE").filter(|s| !s.value.is_empty()) else {
        return;
    };
    let note = |notes: &mut Vec<Note>, kind, reason: String| {
        notes.push(Note::conf(setting.line, "KILL_ROUTE", kind, reason));
    };
    match kill_route::classify(&setting.value) {
        KillRoute::Route { target, lost } => {
            responses.route_action = Some(ActionKind::Route);
            responses.route = Some(target);
            for what in lost {
                note(
                    notes,
                    NoteKind::MappedInPart,
                    format!("\"route\" does not keep {what}"),
                );
            }
        }
        KillRoute::Firewall {
            action,
            interface,
            lost,
        } => {
            if let Some(missing) = missing_tool(action, around) {
                note(
                    notes,
                    NoteKind::NotMapped,
                    format!(
                        "it is PortSentry's {action} recipe, and {missing} is not installed \
                         here, so it could not have worked on this machine either; nfsentry's \
                         \"nft-set\" action blocks in nftables instead"
                    ),
                );
                return;
            }
            responses.route_action = Some(action);
            for what in lost {
                note(
                    notes,
                    NoteKind::MappedInPart,
                    format!("\"{action}\" does not keep {what}"),
                );
            }
            if let Some(interface) = interface {
                match accepted("respond", "ipfilter_interface", &interface.as_str().into()) {
                    Ok(()) => responses.ipfilter_interface = Some(interface),
                    Err(_) => note(
                        notes,
                        NoteKind::MappedInPart,
                        format!(
                            "its interface {} is not an interface name (PortSentry's example \
                             was never replaced?), so the ipf rule is written without \
                             `on IFACE` and applies on every interface",
                            quoted(&interface)
                        ),
                    ),
                }
            }
        }
        KillRoute::Command(_) if command_taken => note(
            notes,
            NoteKind::NotMapped,
            format!(
                "it is no recipe nfsentry knows, so it could only be the \"command\" action, \
                 and nfsentry runs one command, which KILL_RUN_CMD{} has; nfsentry's \
                 \"nft-set\" action blocks in nftables",
                at(settings, "KILL_RUN_CMD")
            ),
        ),
        KillRoute::Command(argv) => {
            // The `command` action stands for it; it has no action of its own.
            if let Some(argv) = command(setting.line, "KILL_ROUTE", argv, around, notes) {
                responses.command = Some((argv, false));
            }
        }
        KillRoute::Refused(reason) => note(notes, NoteKind::NotMapped, reason),
    }
}

/// The first program of a firewall action that is not on PATH here.
fn missing_tool(action: ActionKind, around: &dyn Surroundings) -> Option<&'static str> {
    let tool = match action {
        ActionKind::Iptables => LegacyTool::Iptables,
        ActionKind::Ipchains => LegacyTool::Ipchains,
        ActionKind::Ipfwadm => LegacyTool::Ipfwadm,
        ActionKind::Ipfw => LegacyTool::Ipfw,
        ActionKind::Ipfilter => LegacyTool::Ipfilter,
        _ => return None,
    };
    tool.programs()
        .iter()
        .copied()
        .find(|program| around.find_program(program).is_none())
}
