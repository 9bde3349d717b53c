//! Recognises the KILL_ROUTE recipes PortSentry shipped (route commands, and the iptables,
//! ipchains, ipfwadm, ipfw and ipfilter rules) whatever directory their program was written
//! with, and says which nfsentry action does the same. It checks no tool and runs nothing;
//! a string that is no known recipe is handed back as argv words, or refused.

use std::net::IpAddr;
use std::path::Path;

use super::words::{self, ShellSyntax};
use crate::config::{self, ActionKind, RouteTarget};

const TARGET: &str = "$TARGET$";

/// What a KILL_ROUTE string is to nfsentry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum KillRoute {
    /// A route command: the `route` action with this target.
    Route {
        target: RouteTarget,
        /// What the recipe did that nfsentry's route does not, for the notes.
        lost: Vec<String>,
    },
    /// One of PortSentry's firewall recipes: the action of that tool's name.
    Firewall {
        action: ActionKind,
        /// For ipfilter: the interface of the recipe's `on IFACE`.
        interface: Option<String>,
        lost: Vec<String>,
    },
    /// No recipe nfsentry knows, but a plain command: argv words.
    Command(Vec<String>),
    /// Not carried over, and why.
    Refused(String),
}

/// Classifies KILL_ROUTE's value.
pub(super) fn classify(text: &str) -> KillRoute {
    if !text.contains(TARGET) {
        return KillRoute::Refused(
            "it has no $TARGET$, so PortSentry refused to run it (\"No target variable \
             specified in KILL_ROUTE option\")"
                .to_owned(),
        );
    }
    if let Some(recipe) = ipfilter_pipe(text) {
        return recipe;
    }
    let argv = match words::split(text) {
        Ok(argv) => argv,
        Err(ShellSyntax(what)) => {
            return KillRoute::Refused(format!(
                "it is no recipe nfsentry knows and it uses {what}, which needs the shell \
                 PortSentry ran it with; nfsentry runs commands without a shell"
            ))
        }
    };
    let Some((program, args)) = argv.split_first() else {
        return KillRoute::Refused("it is empty".to_owned());
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let recipe = match program_name(program) {
        "route" => route(&args),
        "ip" => ip_route(&args),
        "iptables" => iptables(&args),
        "ipchains" => ipchains(&args),
        "ipfwadm" => ipfwadm(&args),
        "ipfw" => ipfw(&args),
        _ => None,
    };
    recipe.unwrap_or(KillRoute::Command(argv))
}

/// The file name of a program path: `/usr/local/bin/iptables` → `iptables`. nfsentry finds
/// the firewall tools on PATH itself, so the directory a recipe named does not matter.
fn program_name(program: &str) -> &str {
    Path::new(program)
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or(program)
}

/// The BSD, Linux, Sun, NEXTSTEP, Digital UNIX and HP-UX route recipes:
/// `route add [-host|-net|net] [-blackhole] $TARGET$ [netmask M] [gw] GATEWAY [METRIC]
/// [-blackhole|reject]`.
fn route(args: &[&str]) -> Option<KillRoute> {
    let (verb, rest) = args.split_first()?;
    if *verb != "add" {
        return None;
    }
    let mut blackhole = false;
    let mut gateway: Option<&str> = None;
    let mut netmask: Option<&str> = None;
    let mut targets = 0;
    let mut words = rest.iter().copied();
    while let Some(word) = words.next() {
        match word {
            TARGET => targets += 1,
            "-host" | "host" | "-net" | "net" | "-inet" => {}
            "reject" | "-reject" | "blackhole" | "-blackhole" => blackhole = true,
            "-netmask" | "netmask" => netmask = Some(words.next()?),
            "gw" | "-gateway" => gateway = Some(words.next()?),
            // Sun's and NEXTSTEP's hop count, HP-UX's metric.
            _ if word.bytes().all(|byte| byte.is_ascii_digit()) => {}
            // A gateway written in place, after the target.
            _ if targets == 1 && gateway.is_none() && looks_like_an_address(word) => {
                gateway = Some(word);
            }
            _ => return None,
        }
    }
    if targets != 1 {
        return None;
    }
    let mut lost = Vec::new();
    if let Some(mask) = netmask.filter(|mask| *mask != "255.255.255.255") {
        lost.push(format!(
            "its netmask {mask}: nfsentry routes the scanning address alone, not its network"
        ));
    }
    let target = match (blackhole, gateway) {
        (true, _) => RouteTarget::Blackhole,
        (false, Some(gateway)) => match gateway.parse::<IpAddr>() {
            // Routing to the host itself was the recipes' way of making a blackhole.
            Ok(address) if address.is_loopback() => RouteTarget::Blackhole,
            Ok(address) => return Some(gateway_route(address, lost)),
            Err(_) => {
                return Some(KillRoute::Refused(format!(
                    "its gateway {} is not an IP address (PortSentry's example 333.444.555.666 \
                     was never replaced), so the command failed on every block; nfsentry's \
                     \"route\" action with route = \"blackhole\" does what it meant",
                    super::quoted(gateway)
                )))
            }
        },
        (false, None) => return None,
    };
    Some(KillRoute::Route { target, lost })
}

/// A route via `gateway`, unless nfsentry's config refuses that gateway (the broadcast or
/// unspecified address, say), which made PortSentry's command fail on every block too.
fn gateway_route(gateway: IpAddr, lost: Vec<String>) -> KillRoute {
    match config::gateway_problem(gateway) {
        Some(problem) => KillRoute::Refused(format!(
            "its gateway {gateway} {problem}; nfsentry's route = \"{gateway}\" is refused for \
             that reason"
        )),
        None => KillRoute::Route {
            target: RouteTarget::Gateway(gateway),
            lost,
        },
    }
}

/// `ip route add {blackhole|unreachable|prohibit} $TARGET$[/32]` and
/// `ip route add $TARGET$[/32] via GATEWAY`, which admins wrote in place of `route`.
fn ip_route(args: &[&str]) -> Option<KillRoute> {
    let rest = match args {
        [object, "add", rest @ ..] if ["route", "ro", "r"].contains(object) => rest,
        _ => return None,
    };
    let is_target = |word: &str| word == TARGET || word == "$TARGET$/32";
    let target = match rest {
        [kind, target] if ["blackhole", "unreachable", "prohibit"].contains(kind) => {
            is_target(target).then_some(RouteTarget::Blackhole)?
        }
        [target, "via", gateway] if is_target(target) => match gateway.parse::<IpAddr>() {
            Ok(address) if address.is_loopback() => RouteTarget::Blackhole,
            Ok(address) => return Some(gateway_route(address, Vec::new())),
            Err(_) => return None,
        },
        _ => return None,
    };
    Some(KillRoute::Route {
        target,
        lost: Vec::new(),
    })
}

/// `iptables -I INPUT -s $TARGET$ -j DROP` (or `-A`): nfsentry's iptables action.
fn iptables(args: &[&str]) -> Option<KillRoute> {
    match args {
        ["-I" | "-A", "INPUT", "-s", TARGET, "-j", "DROP"] => Some(firewall(ActionKind::Iptables)),
        _ => None,
    }
}

/// `ipchains -I input -s $TARGET$ -j DENY [-l]`.
fn ipchains(args: &[&str]) -> Option<KillRoute> {
    match args {
        ["-I" | "-A", "input", "-s", TARGET, "-j", "DENY"]
        | ["-I" | "-A", "input", "-s", TARGET, "-j", "DENY", "-l"] => {
            Some(firewall(ActionKind::Ipchains))
        }
        _ => None,
    }
}

/// `ipfwadm -I -i deny -S $TARGET$ [-o]`.
fn ipfwadm(args: &[&str]) -> Option<KillRoute> {
    match args {
        ["-I", "-i" | "-a", "deny", "-S", TARGET]
        | ["-I", "-i" | "-a", "deny", "-S", TARGET, "-o"] => Some(firewall(ActionKind::Ipfwadm)),
        _ => None,
    }
}

/// `ipfw add N deny all from $TARGET$:255.255.255.255 to any`.
fn ipfw(args: &[&str]) -> Option<KillRoute> {
    let ["add", number, "deny", "all" | "ip", "from", source, "to", "any"] = args else {
        return None;
    };
    if !["$TARGET$:255.255.255.255", "$TARGET$/32", TARGET].contains(source)
        || !number.bytes().all(|byte| byte.is_ascii_digit())
    {
        return None;
    }
    let mut lost = Vec::new();
    if *number != "1" {
        lost.push(format!(
            "its rule number {number}: nfsentry keeps every block in ipfw rule 1"
        ));
    }
    Some(KillRoute::Firewall {
        action: ActionKind::Ipfw,
        interface: None,
        lost,
    })
}

fn firewall(action: ActionKind) -> KillRoute {
    KillRoute::Firewall {
        action,
        interface: None,
        lost: Vec::new(),
    }
}

/// `echo 'block in log on IFACE from $TARGET$/32 to any' | ipf -f -`, the one shipped recipe
/// that is a pipeline.
fn ipfilter_pipe(text: &str) -> Option<KillRoute> {
    let (left, right) = text.split_once('|')?;
    let left = words::split(left).ok()?;
    let right = words::split(right).ok()?;
    let [echo, rule] = left.as_slice() else {
        return None;
    };
    let right: Vec<&str> = right.iter().map(String::as_str).collect();
    let [ipf, "-f", "-"] = right.as_slice() else {
        return None;
    };
    if program_name(echo) != "echo" || program_name(ipf) != "ipf" {
        return None;
    }
    let rule: Vec<&str> = rule.split_whitespace().collect();
    let (logged, interface) = match rule.as_slice() {
        ["block", "in", "log", "on", interface, "from", "$TARGET$/32", "to", "any"] => {
            (true, Some(*interface))
        }
        ["block", "in", "on", interface, "from", "$TARGET$/32", "to", "any"] => {
            (false, Some(*interface))
        }
        ["block", "in", "log", "from", "$TARGET$/32", "to", "any"] => (true, None),
        ["block", "in", "from", "$TARGET$/32", "to", "any"] => (false, None),
        _ => return None,
    };
    let mut lost = Vec::new();
    if !logged {
        lost.push("its rule did not log; nfsentry's ipf rule has `log`".to_owned());
    }
    Some(KillRoute::Firewall {
        action: ActionKind::Ipfilter,
        interface: interface.map(str::to_owned),
        lost,
    })
}

fn looks_like_an_address(word: &str) -> bool {
    !word.is_empty()
        && word
            .bytes()
            .all(|byte| byte.is_ascii_hexdigit() || b".:".contains(&byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_to(target: RouteTarget) -> KillRoute {
        KillRoute::Route {
            target,
            lost: Vec::new(),
        }
    }

    fn gateway(address: &str) -> RouteTarget {
        RouteTarget::Gateway(address.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])))
    }

    /// Every KILL_ROUTE line of PortSentry 1.2's portsentry.conf, and what it becomes.
    #[test]
    fn the_shipped_recipes_map_to_their_actions() {
        let cases = [
            // Generic Linux with the reject flag (Debian's default).
            (
                "/sbin/route add -host $TARGET$ reject",
                route_to(RouteTarget::Blackhole),
            ),
            // Generic Linux and BSD through a real gateway.
            (
                "/sbin/route add -host $TARGET$ gw 192.0.2.254",
                route_to(gateway("192.0.2.254")),
            ),
            (
                "/sbin/route add $TARGET$ 192.0.2.254",
                route_to(gateway("192.0.2.254")),
            ),
            // Sun and NEXTSTEP, with their hop count.
            (
                "/usr/sbin/route add $TARGET$ 192.0.2.254 1",
                route_to(gateway("192.0.2.254")),
            ),
            (
                "/usr/etc/route add $TARGET$ 127.0.0.1 1",
                route_to(RouteTarget::Blackhole),
            ),
            // FreeBSD and Digital UNIX blackholes.
            (
                "route add -net $TARGET$ -netmask 255.255.255.255 127.0.0.1 -blackhole",
                route_to(RouteTarget::Blackhole),
            ),
            (
                "/sbin/route add -host -blackhole $TARGET$ 127.0.0.1",
                route_to(RouteTarget::Blackhole),
            ),
            // The packet filters.
            (
                "/sbin/ipfwadm -I -i deny -S $TARGET$ -o",
                firewall(ActionKind::Ipfwadm),
            ),
            (
                "/sbin/ipfwadm -I -i deny -S $TARGET$",
                firewall(ActionKind::Ipfwadm),
            ),
            (
                "/sbin/ipchains -I input -s $TARGET$ -j DENY -l",
                firewall(ActionKind::Ipchains),
            ),
            (
                "/sbin/ipchains -I input -s $TARGET$ -j DENY",
                firewall(ActionKind::Ipchains),
            ),
            (
                "/usr/local/bin/iptables -I INPUT -s $TARGET$ -j DROP",
                firewall(ActionKind::Iptables),
            ),
            (
                "/sbin/ipfw add 1 deny all from $TARGET$:255.255.255.255 to any",
                firewall(ActionKind::Ipfw),
            ),
            (
                "/bin/echo 'block in log on eth1 from $TARGET$/32 to any' | /sbin/ipf -f -",
                KillRoute::Firewall {
                    action: ActionKind::Ipfilter,
                    interface: Some("eth1".to_owned()),
                    lost: Vec::new(),
                },
            ),
            // What admins wrote on later Linux systems.
            (
                "/sbin/ip route add blackhole $TARGET$",
                route_to(RouteTarget::Blackhole),
            ),
            (
                "ip route add $TARGET$/32 via 192.0.2.254",
                route_to(gateway("192.0.2.254")),
            ),
            (
                "iptables -A INPUT -s $TARGET$ -j DROP",
                firewall(ActionKind::Iptables),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(classify(text), expected, "{text:?}");
        }
    }

    #[test]
    fn what_nfsentry_does_differently_is_named() {
        let hp_ux = classify("/usr/sbin/route add net $TARGET$ netmask 255.255.255.0 127.0.0.1");
        assert!(
            matches!(&hp_ux, KillRoute::Route { target: RouteTarget::Blackhole, lost }
                if lost.len() == 1 && lost[0].contains("255.255.255.0")),
            "{hp_ux:?}"
        );
        let ipfw = classify("/sbin/ipfw add 100 deny all from $TARGET$:255.255.255.255 to any");
        assert!(
            matches!(&ipfw, KillRoute::Firewall { action: ActionKind::Ipfw, lost, .. }
                if lost.len() == 1 && lost[0].contains("100")),
            "{ipfw:?}"
        );
        let unlogged = classify("echo 'block in on em0 from $TARGET$/32 to any' | ipf -f -");
        assert!(
            matches!(&unlogged, KillRoute::Firewall { action: ActionKind::Ipfilter, lost, .. }
                if lost.len() == 1),
            "{unlogged:?}"
        );
    }

    #[test]
    fn the_unedited_example_gateway_is_refused() {
        for text in [
            "/sbin/route add $TARGET$ 333.444.555.666",
            "/sbin/route add -host $TARGET$ gw 333.444.555.666",
            "/usr/sbin/route add $TARGET$ 333.444.555.666 1",
        ] {
            let result = classify(text);
            assert!(
                matches!(&result, KillRoute::Refused(why) if why.contains("333.444.555.666")),
                "{text:?}: {result:?}"
            );
        }
    }

    #[test]
    fn gateways_the_config_refuses_are_refused() {
        for text in [
            "/sbin/route add $TARGET$ 0.0.0.0",
            "/sbin/route add -host $TARGET$ gw 255.255.255.255",
            "ip route add $TARGET$ via 224.0.0.1",
            "ip route add $TARGET$ via fe80::1",
        ] {
            let result = classify(text);
            assert!(
                matches!(&result, KillRoute::Refused(why) if why.starts_with("its gateway ")),
                "{text:?}: {result:?}"
            );
        }
    }

    #[test]
    fn other_commands_become_argv_or_are_refused() {
        let argv = |words: &[&str]| {
            KillRoute::Command(words.iter().map(|word| (*word).to_owned()).collect())
        };
        assert_eq!(
            classify("/usr/local/sbin/block-host $TARGET$"),
            argv(&["/usr/local/sbin/block-host", "$TARGET$"])
        );
        // A tool nfsentry knows, with a rule it does not: run as written.
        assert_eq!(
            classify("/sbin/iptables -I INPUT -s $TARGET$ -j REJECT"),
            argv(&[
                "/sbin/iptables",
                "-I",
                "INPUT",
                "-s",
                "$TARGET$",
                "-j",
                "REJECT"
            ])
        );
        assert!(matches!(
            classify("/sbin/iptables -I INPUT -s $TARGET$ -j DROP && /bin/sync"),
            KillRoute::Refused(why) if why.contains("&")
        ));
        assert!(matches!(
            classify("/sbin/route add default reject"),
            KillRoute::Refused(why) if why.contains("no $TARGET$")
        ));
    }
}
