//! The legacy firewall actions (`nfsentry::respond::legacy`) run exactly PortSentry's commands.
//! The golden tests hand each action a recording executor and assert every argv and standard
//! input it would run, for IPv4 and IPv6, block, release and restore, against scripted exit
//! statuses and error output: they need no root and no tools, and change nothing in the
//! environment. One test runs real iptables/ip6tables in a throwaway network namespace (root,
//! `ip`, `iptables`) and shows the rules placed, kept single and removed. None of them tests when
//! the responder decides to block.

mod support;

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use caps::{CapSet, Capability, CapsHashSet};
use nfsentry::respond::executor::{RecordingExecutor, Reply};
use nfsentry::respond::legacy::{describe, LegacyAction, LegacyTool};
use nfsentry::respond::process::Invocation;
use nfsentry::respond::{self, Action, ActionError};
use nfsentry::store::BlockRecord;
use support::Netns;

const BLOCKED_V4: &str = "192.0.2.7";
const OTHER_V4: &str = "198.51.100.9";
const BLOCKED_V6: &str = "2001:db8::7";
/// What the recording executor searches for bare program names, and names when one is missing.
const SEARCH_PATH: &str = "/usr/sbin:/sbin";
/// Every program a legacy action may run, as the recording executor has them installed.
const INSTALLED: [&str; 6] = [
    "/sbin/iptables",
    "/sbin/ip6tables",
    "/sbin/ipchains",
    "/sbin/ipfwadm",
    "/sbin/ipfw",
    "/sbin/ipf",
];
const ALL_TOOLS: [LegacyTool; 5] = [
    LegacyTool::Iptables,
    LegacyTool::Ipchains,
    LegacyTool::Ipfwadm,
    LegacyTool::Ipfw,
    LegacyTool::Ipfilter,
];
/// How long every tool call may take (the action's fixed limit).
const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

/// A recording executor with every tool installed.
fn tools() -> RecordingExecutor {
    RecordingExecutor::new(SEARCH_PATH, &INSTALLED)
}

/// Exit statuses for the next calls, with nothing on standard error.
fn statuses(codes: &[i32]) -> Vec<Reply> {
    codes.iter().copied().map(Reply::status).collect()
}

/// A call as the goldens write it: the program's path and its arguments, then after ` < `
/// exactly what it is fed on standard input. An argument that is empty or holds blank space is
/// quoted, so that the text says where each argument ends.
fn shown(invocation: &Invocation) -> String {
    let mut text = invocation.program.display().to_string();
    for arg in &invocation.args {
        match arg.is_empty() || arg.contains(char::is_whitespace) {
            true => text.push_str(&format!(" {arg:?}")),
            false => text.push_str(&format!(" {arg}")),
        }
    }
    if let Some(stdin) = &invocation.stdin {
        text.push_str(&format!(" < {}", String::from_utf8_lossy(stdin)));
    }
    text
}

/// The calls recorded since the last look, as [`shown`] writes them.
fn taken(tools: &RecordingExecutor) -> Vec<String> {
    tools.take_calls().iter().map(shown).collect()
}

fn record(source: &str) -> BlockRecord {
    BlockRecord {
        source: source.parse::<IpAddr>().unwrap(),
        added: 1_700_000_000,
        expires: Some(1_700_003_600),
        protocol: "TCP".to_owned(),
        port: 31337,
        kind: "SYN/Normal".to_owned(),
        verified: false,
    }
}

/// A recording action, after an `init` with nothing due, as the responder leaves it.
fn action_for(tool: LegacyTool, tools: &RecordingExecutor) -> LegacyAction {
    recording(tool, None, tools).unwrap()
}

/// A recording action with `ipfilter_interface`, after an `init` with nothing due.
fn recording(
    tool: LegacyTool,
    ipfilter_interface: Option<&str>,
    tools: &RecordingExecutor,
) -> Result<LegacyAction, ActionError> {
    let action = LegacyAction::new(tool, ipfilter_interface.map(str::to_owned));
    started(action.with_executor(tools.clone()))
}

fn started(mut action: LegacyAction) -> Result<LegacyAction, ActionError> {
    action.init(&[], SystemTime::now())?;
    Ok(action)
}

/// What `check-config` says about `tool` when it looks for the tools with `tools`.
fn check(tool: LegacyTool, tools: &RecordingExecutor) -> Vec<String> {
    let action: Box<dyn Action> =
        Box::new(LegacyAction::new(tool, None).with_executor(tools.clone()));
    respond::check(&[action])
}

fn message(error: ActionError) -> String {
    error.to_string()
}

// ---- the goldens: every tool, both families, block, release and restore ----

/// What one verb runs for one address, given the exit statuses the tool answers with.
struct Step {
    /// Exit statuses of the calls, in order; calls beyond them succeed.
    answers: &'static [i32],
    /// The calls, as [`shown`] writes them.
    calls: &'static [&'static str],
}

/// One tool's commands for one address: a block, then a release of it by the same action,
/// then a restore of it at start by a new action (the blocks journal says it is still due).
struct Golden {
    tool: LegacyTool,
    ipfilter_interface: Option<&'static str>,
    source: &'static str,
    block: Step,
    release: Step,
    restore: Step,
}

const NOTHING: Step = Step {
    answers: &[],
    calls: &[],
};

const GOLDENS: &[Golden] = &[
    Golden {
        tool: LegacyTool::Iptables,
        ipfilter_interface: None,
        source: BLOCKED_V4,
        // -C: not there; -I: done.
        block: Step {
            answers: &[1, 0],
            calls: &[
                "/sbin/iptables -C INPUT -s 192.0.2.7 -j DROP",
                "/sbin/iptables -I INPUT -s 192.0.2.7 -j DROP",
            ],
        },
        // Deleted until -C no longer finds it.
        release: Step {
            answers: &[0, 0, 1],
            calls: &[
                "/sbin/iptables -C INPUT -s 192.0.2.7 -j DROP",
                "/sbin/iptables -D INPUT -s 192.0.2.7 -j DROP",
                "/sbin/iptables -C INPUT -s 192.0.2.7 -j DROP",
            ],
        },
        // The rule went with a reboot: placed again.
        restore: Step {
            answers: &[1, 0],
            calls: &[
                "/sbin/iptables -C INPUT -s 192.0.2.7 -j DROP",
                "/sbin/iptables -I INPUT -s 192.0.2.7 -j DROP",
            ],
        },
    },
    Golden {
        tool: LegacyTool::Iptables,
        ipfilter_interface: None,
        source: BLOCKED_V6,
        block: Step {
            answers: &[1, 0],
            calls: &[
                "/sbin/ip6tables -C INPUT -s 2001:db8::7 -j DROP",
                "/sbin/ip6tables -I INPUT -s 2001:db8::7 -j DROP",
            ],
        },
        release: Step {
            answers: &[0, 0, 1],
            calls: &[
                "/sbin/ip6tables -C INPUT -s 2001:db8::7 -j DROP",
                "/sbin/ip6tables -D INPUT -s 2001:db8::7 -j DROP",
                "/sbin/ip6tables -C INPUT -s 2001:db8::7 -j DROP",
            ],
        },
        // The rule survived the restart: not doubled.
        restore: Step {
            answers: &[0],
            calls: &["/sbin/ip6tables -C INPUT -s 2001:db8::7 -j DROP"],
        },
    },
    Golden {
        tool: LegacyTool::Ipchains,
        ipfilter_interface: None,
        source: BLOCKED_V4,
        block: Step {
            answers: &[],
            calls: &["/sbin/ipchains -I input -s 192.0.2.7 -j DENY -l"],
        },
        release: Step {
            answers: &[],
            calls: &["/sbin/ipchains -D input -s 192.0.2.7 -j DENY -l"],
        },
        // No rule left from before: the delete fails, the insert follows.
        restore: Step {
            answers: &[1],
            calls: &[
                "/sbin/ipchains -D input -s 192.0.2.7 -j DENY -l",
                "/sbin/ipchains -I input -s 192.0.2.7 -j DENY -l",
            ],
        },
    },
    // ipchains and ipfwadm cannot filter IPv6: such sources are skipped.
    Golden {
        tool: LegacyTool::Ipchains,
        ipfilter_interface: None,
        source: BLOCKED_V6,
        block: NOTHING,
        release: NOTHING,
        restore: NOTHING,
    },
    Golden {
        tool: LegacyTool::Ipfwadm,
        ipfilter_interface: None,
        source: BLOCKED_V4,
        block: Step {
            answers: &[],
            calls: &["/sbin/ipfwadm -I -i deny -S 192.0.2.7 -o"],
        },
        release: Step {
            answers: &[],
            calls: &["/sbin/ipfwadm -I -d deny -S 192.0.2.7 -o"],
        },
        // The rule survived the restart: removed, then placed once.
        restore: Step {
            answers: &[0],
            calls: &[
                "/sbin/ipfwadm -I -d deny -S 192.0.2.7 -o",
                "/sbin/ipfwadm -I -i deny -S 192.0.2.7 -o",
            ],
        },
    },
    Golden {
        tool: LegacyTool::Ipfwadm,
        ipfilter_interface: None,
        source: BLOCKED_V6,
        block: NOTHING,
        release: NOTHING,
        restore: NOTHING,
    },
    Golden {
        tool: LegacyTool::Ipfw,
        ipfilter_interface: None,
        source: BLOCKED_V4,
        block: Step {
            answers: &[],
            calls: &["/sbin/ipfw add 1 deny all from 192.0.2.7:255.255.255.255 to any"],
        },
        // Rule 1 rebuilt without the address: nothing else is blocked.
        release: Step {
            answers: &[],
            calls: &["/sbin/ipfw delete 1"],
        },
        // No rule 1 yet (ipfw exits 69, EX_UNAVAILABLE): not an error, the add follows.
        restore: Step {
            answers: &[69],
            calls: &[
                "/sbin/ipfw delete 1",
                "/sbin/ipfw add 1 deny all from 192.0.2.7:255.255.255.255 to any",
            ],
        },
    },
    Golden {
        tool: LegacyTool::Ipfw,
        ipfilter_interface: None,
        source: BLOCKED_V6,
        block: Step {
            answers: &[],
            calls: &["/sbin/ipfw add 1 deny all from 2001:db8::7/128 to any"],
        },
        release: Step {
            answers: &[],
            calls: &["/sbin/ipfw delete 1"],
        },
        restore: Step {
            answers: &[],
            calls: &[
                "/sbin/ipfw delete 1",
                "/sbin/ipfw add 1 deny all from 2001:db8::7/128 to any",
            ],
        },
    },
    Golden {
        tool: LegacyTool::Ipfilter,
        ipfilter_interface: None,
        source: BLOCKED_V4,
        block: Step {
            answers: &[],
            calls: &["/sbin/ipf -f - < block in log from 192.0.2.7/32 to any\n"],
        },
        release: Step {
            answers: &[],
            calls: &["/sbin/ipf -r -f - < block in log from 192.0.2.7/32 to any\n"],
        },
        // No rule left from before: the removal fails, the rule is added.
        restore: Step {
            answers: &[1],
            calls: &[
                "/sbin/ipf -r -f - < block in log from 192.0.2.7/32 to any\n",
                "/sbin/ipf -f - < block in log from 192.0.2.7/32 to any\n",
            ],
        },
    },
    Golden {
        tool: LegacyTool::Ipfilter,
        ipfilter_interface: None,
        source: BLOCKED_V6,
        block: Step {
            answers: &[],
            calls: &["/sbin/ipf -6 -f - < block in log from 2001:db8::7/128 to any\n"],
        },
        release: Step {
            answers: &[],
            calls: &["/sbin/ipf -6 -r -f - < block in log from 2001:db8::7/128 to any\n"],
        },
        restore: Step {
            answers: &[0],
            calls: &[
                "/sbin/ipf -6 -r -f - < block in log from 2001:db8::7/128 to any\n",
                "/sbin/ipf -6 -f - < block in log from 2001:db8::7/128 to any\n",
            ],
        },
    },
    Golden {
        tool: LegacyTool::Ipfilter,
        ipfilter_interface: Some("em0"),
        source: BLOCKED_V4,
        block: Step {
            answers: &[],
            calls: &["/sbin/ipf -f - < block in log on em0 from 192.0.2.7/32 to any\n"],
        },
        release: Step {
            answers: &[],
            calls: &["/sbin/ipf -r -f - < block in log on em0 from 192.0.2.7/32 to any\n"],
        },
        restore: Step {
            answers: &[1],
            calls: &[
                "/sbin/ipf -r -f - < block in log on em0 from 192.0.2.7/32 to any\n",
                "/sbin/ipf -f - < block in log on em0 from 192.0.2.7/32 to any\n",
            ],
        },
    },
    Golden {
        tool: LegacyTool::Ipfilter,
        ipfilter_interface: Some("em0"),
        source: BLOCKED_V6,
        block: Step {
            answers: &[],
            calls: &["/sbin/ipf -6 -f - < block in log on em0 from 2001:db8::7/128 to any\n"],
        },
        release: Step {
            answers: &[],
            calls: &["/sbin/ipf -6 -r -f - < block in log on em0 from 2001:db8::7/128 to any\n"],
        },
        restore: Step {
            answers: &[0],
            calls: &[
                "/sbin/ipf -6 -r -f - < block in log on em0 from 2001:db8::7/128 to any\n",
                "/sbin/ipf -6 -f - < block in log on em0 from 2001:db8::7/128 to any\n",
            ],
        },
    },
];

#[test]
fn every_tool_runs_its_golden_commands_for_ipv4_and_ipv6() {
    let now = SystemTime::now();
    for golden in GOLDENS {
        let case = format!(
            "{} {} (interface {:?})",
            golden.tool, golden.source, golden.ipfilter_interface
        );
        let tools = tools();
        let blocked = record(golden.source);
        let mut action = recording(golden.tool, golden.ipfilter_interface, &tools).unwrap();

        // Every call is given the tool's time limit.
        let look = || -> Vec<String> {
            let calls = tools.take_timed_calls();
            assert!(
                calls.iter().all(|(_, timeout)| *timeout == TOOL_TIMEOUT),
                "{case}: {calls:?}"
            );
            calls.iter().map(|(call, _)| shown(call)).collect()
        };

        tools.answer(statuses(golden.block.answers));
        action.block(&[&blocked], now).unwrap();
        assert_eq!(look(), golden.block.calls, "{case}: block");

        tools.answer(statuses(golden.release.answers));
        action.release(&[&blocked]).unwrap();
        assert_eq!(look(), golden.release.calls, "{case}: release");

        let mut restarted =
            LegacyAction::new(golden.tool, golden.ipfilter_interface.map(str::to_owned))
                .with_executor(tools.clone());
        tools.answer(statuses(golden.restore.answers));
        restarted.init(&[&blocked], now).unwrap();
        assert_eq!(look(), golden.restore.calls, "{case}: restore");
    }
}

#[test]
fn the_goldens_cover_every_tool_for_both_families() {
    for tool in ALL_TOOLS {
        for source in [BLOCKED_V4, BLOCKED_V6] {
            assert!(
                GOLDENS
                    .iter()
                    .any(|golden| golden.tool == tool && golden.source == source),
                "no golden for {tool} {source}"
            );
        }
    }
}

// ---- what the goldens do not show: repeats, batches, failures ----

#[test]
fn iptables_checks_before_inserting_and_never_inserts_twice() {
    let tools = tools();
    let mut iptables = action_for(LegacyTool::Iptables, &tools);
    let now = SystemTime::now();

    tools.answer(statuses(&[1, 0])); // -C: not there; -I: done
    iptables.block(&[&record(BLOCKED_V4)], now).unwrap();
    tools.answer(statuses(&[0])); // -C: there
    iptables.block(&[&record(BLOCKED_V4)], now).unwrap();
    tools.answer(statuses(&[0]));
    iptables.init(&[&record(BLOCKED_V4)], now).unwrap();

    assert_eq!(
        taken(&tools),
        [
            "/sbin/iptables -C INPUT -s 192.0.2.7 -j DROP",
            "/sbin/iptables -I INPUT -s 192.0.2.7 -j DROP",
            "/sbin/iptables -C INPUT -s 192.0.2.7 -j DROP",
            "/sbin/iptables -C INPUT -s 192.0.2.7 -j DROP",
        ]
    );
}

#[test]
fn iptables_release_deletes_until_the_rule_is_gone() {
    let tools = tools();
    let mut iptables = action_for(LegacyTool::Iptables, &tools);

    // The rule is there twice (placed by hand, say): both copies must go.
    tools.answer(statuses(&[0, 0, 0, 0, 1]));
    iptables.release(&[&record(BLOCKED_V4)]).unwrap();
    assert_eq!(
        taken(&tools),
        [
            "/sbin/iptables -C INPUT -s 192.0.2.7 -j DROP",
            "/sbin/iptables -D INPUT -s 192.0.2.7 -j DROP",
            "/sbin/iptables -C INPUT -s 192.0.2.7 -j DROP",
            "/sbin/iptables -D INPUT -s 192.0.2.7 -j DROP",
            "/sbin/iptables -C INPUT -s 192.0.2.7 -j DROP",
        ]
    );

    // Already gone (for example after a reboot): nothing to delete, and no error.
    tools.answer(statuses(&[1]));
    iptables.release(&[&record(BLOCKED_V4)]).unwrap();
    assert_eq!(
        taken(&tools),
        ["/sbin/iptables -C INPUT -s 192.0.2.7 -j DROP"]
    );

    // A tool that claims every delete worked while the rule stays is not believed forever.
    tools.answer(statuses(&[0; 64]));
    let error = message(iptables.release(&[&record(BLOCKED_V4)]).unwrap_err());
    assert_eq!(
        error,
        "iptables: the rule for 192.0.2.7 is still in place after 32 deletions"
    );
    assert_eq!(tools.take_calls().len(), 64, "32 checks and 32 deletions");
}

#[test]
fn iptables_uses_ip6tables_for_ipv6_sources() {
    let tools = tools();
    let mut iptables = action_for(LegacyTool::Iptables, &tools);

    tools.answer(statuses(&[1, 0, 0, 0, 1]));
    iptables
        .block(&[&record(BLOCKED_V6)], SystemTime::now())
        .unwrap();
    iptables.release(&[&record(BLOCKED_V6)]).unwrap();
    assert_eq!(
        taken(&tools),
        [
            "/sbin/ip6tables -C INPUT -s 2001:db8::7 -j DROP",
            "/sbin/ip6tables -I INPUT -s 2001:db8::7 -j DROP",
            "/sbin/ip6tables -C INPUT -s 2001:db8::7 -j DROP",
            "/sbin/ip6tables -D INPUT -s 2001:db8::7 -j DROP",
            "/sbin/ip6tables -C INPUT -s 2001:db8::7 -j DROP",
        ]
    );
}

#[test]
fn a_failing_tool_is_reported_with_its_status_and_stderr() {
    let tools = tools();
    let mut iptables = action_for(LegacyTool::Iptables, &tools);
    let now = SystemTime::now();
    let refusal = "iptables v1.8.9 (legacy): can't initialize iptables table `filter': \
                   Permission denied (you must be root)";

    // Not there; the insert fails.
    tools.answer([Reply::status(1), Reply::status(4).with_stderr(refusal)]);
    let error = message(iptables.block(&[&record(BLOCKED_V4)], now).unwrap_err());
    assert_eq!(
        error,
        format!(
            "iptables: `/sbin/iptables -I INPUT -s 192.0.2.7 -j DROP` exited with exit status: \
             4; stderr: {refusal}"
        )
    );

    // A check that neither finds nor misses the rule (exit 2: bad usage) stops the block.
    tools.take_calls();
    tools.answer([Reply::status(2).with_stderr("iptables: bad usage\n")]);
    let error = message(iptables.block(&[&record(BLOCKED_V4)], now).unwrap_err());
    assert_eq!(
        error,
        "iptables: `/sbin/iptables -C INPUT -s 192.0.2.7 -j DROP` exited with exit status: 2; \
         stderr: iptables: bad usage"
    );
    assert_eq!(
        tools.take_calls().len(),
        1,
        "no insert after a failed check"
    );

    // A tool that hangs is killed; one that cannot start at all is named with the reason.
    tools.answer([
        Reply::status(1),
        Reply::TimedOut {
            stderr: "hanging".to_owned(),
        },
    ]);
    let error = message(iptables.block(&[&record(BLOCKED_V4)], now).unwrap_err());
    assert_eq!(
        error,
        "iptables: `/sbin/iptables -I INPUT -s 192.0.2.7 -j DROP`: did not finish within 10s; \
         killed it; stderr: hanging"
    );
    tools.answer([Reply::CannotStart(io::ErrorKind::PermissionDenied)]);
    let error = message(iptables.release(&[&record(BLOCKED_V6)]).unwrap_err());
    assert_eq!(
        error,
        format!(
            "iptables: `/sbin/ip6tables -C INPUT -s 2001:db8::7 -j DROP`: cannot start: {}",
            io::Error::from(io::ErrorKind::PermissionDenied)
        )
    );
}

#[test]
fn ipchains_and_ipfwadm_run_portsentrys_commands_and_skip_ipv6() {
    let tools = tools();
    let now = SystemTime::now();
    let cases = [
        (
            LegacyTool::Ipchains,
            "/sbin/ipchains -I input -s 192.0.2.7 -j DENY -l",
            "/sbin/ipchains -D input -s 192.0.2.7 -j DENY -l",
        ),
        (
            LegacyTool::Ipfwadm,
            "/sbin/ipfwadm -I -i deny -S 192.0.2.7 -o",
            "/sbin/ipfwadm -I -d deny -S 192.0.2.7 -o",
        ),
    ];
    for (tool, block, release) in cases {
        let mut legacy = action_for(tool, &tools);
        legacy.block(&[&record(BLOCKED_V4)], now).unwrap();
        // A second block of the same address in this run places nothing more.
        legacy.block(&[&record(BLOCKED_V4)], now).unwrap();
        legacy.release(&[&record(BLOCKED_V4)]).unwrap();
        legacy.block(&[&record(BLOCKED_V6)], now).unwrap();
        legacy.release(&[&record(BLOCKED_V6)]).unwrap();
        legacy.init(&[&record(BLOCKED_V6)], now).unwrap();
        assert_eq!(taken(&tools), [block, release], "{tool}");
    }
}

#[test]
fn restore_without_a_check_removes_before_placing() {
    let tools = tools();
    let now = SystemTime::now();
    let mut ipchains = action_for(LegacyTool::Ipchains, &tools);

    // First address: no rule left from before (delete fails); second: one survived.
    tools.answer(statuses(&[1, 0, 0, 0]));
    ipchains
        .init(&[&record(BLOCKED_V4), &record(OTHER_V4)], now)
        .unwrap();
    // Restored addresses count as placed: blocking one again runs nothing.
    ipchains.block(&[&record(OTHER_V4)], now).unwrap();
    assert_eq!(
        taken(&tools),
        [
            "/sbin/ipchains -D input -s 192.0.2.7 -j DENY -l",
            "/sbin/ipchains -I input -s 192.0.2.7 -j DENY -l",
            "/sbin/ipchains -D input -s 198.51.100.9 -j DENY -l",
            "/sbin/ipchains -I input -s 198.51.100.9 -j DENY -l",
        ]
    );

    // A release whose delete fails is an error: the rule may still be in place.
    tools.answer(statuses(&[1]));
    let error = message(ipchains.release(&[&record(OTHER_V4)]).unwrap_err());
    assert_eq!(
        error,
        "ipchains: `/sbin/ipchains -D input -s 198.51.100.9 -j DENY -l` exited with exit \
         status: 1"
    );
}

#[test]
fn ipfw_release_rebuilds_rule_1_without_the_released_address() {
    let tools = tools();
    let now = SystemTime::now();
    let mut ipfw = action_for(LegacyTool::Ipfw, &tools);

    ipfw.block(&[&record(BLOCKED_V4)], now).unwrap();
    ipfw.block(&[&record(BLOCKED_V6)], now).unwrap();
    ipfw.block(&[&record(BLOCKED_V4)], now).unwrap();
    ipfw.release(&[&record(BLOCKED_V4)]).unwrap();
    assert_eq!(
        taken(&tools),
        [
            "/sbin/ipfw add 1 deny all from 192.0.2.7:255.255.255.255 to any",
            "/sbin/ipfw add 1 deny all from 2001:db8::7/128 to any",
            "/sbin/ipfw delete 1",
            "/sbin/ipfw add 1 deny all from 2001:db8::7/128 to any",
        ]
    );

    // And the other way round: an IPv6 release keeps the IPv4 address.
    ipfw.block(&[&record(BLOCKED_V4)], now).unwrap();
    ipfw.release(&[&record(BLOCKED_V6)]).unwrap();
    assert_eq!(
        taken(&tools),
        [
            "/sbin/ipfw add 1 deny all from 192.0.2.7:255.255.255.255 to any",
            "/sbin/ipfw delete 1",
            "/sbin/ipfw add 1 deny all from 192.0.2.7:255.255.255.255 to any",
        ]
    );
}

#[test]
fn ipfw_releases_a_batch_with_one_rebuild_of_rule_1() {
    let tools = tools();
    let now = SystemTime::now();
    let mut ipfw = action_for(LegacyTool::Ipfw, &tools);
    let blocks = [record(BLOCKED_V4), record(OTHER_V4), record(BLOCKED_V6)];
    let all: Vec<&BlockRecord> = blocks.iter().collect();

    ipfw.block(&all, now).unwrap();
    tools.take_calls();
    ipfw.release(&[&blocks[0], &blocks[2]]).unwrap();
    assert_eq!(
        taken(&tools),
        [
            "/sbin/ipfw delete 1",
            "/sbin/ipfw add 1 deny all from 198.51.100.9:255.255.255.255 to any",
        ]
    );

    // The released addresses stay released: the next rebuild leaves them out too.
    ipfw.release(&[&blocks[1]]).unwrap();
    assert_eq!(taken(&tools), ["/sbin/ipfw delete 1"]);
}

#[test]
fn tools_with_a_rule_per_address_release_a_batch_one_by_one() {
    let tools = tools();
    let now = SystemTime::now();
    let mut ipchains = action_for(LegacyTool::Ipchains, &tools);
    let blocks = [record(BLOCKED_V4), record(OTHER_V4)];
    let all: Vec<&BlockRecord> = blocks.iter().collect();

    ipchains.block(&all, now).unwrap();
    tools.take_calls();
    // The first delete fails; the second is still attempted and the error counts them.
    tools.answer(statuses(&[1, 0]));
    let error = message(ipchains.release(&all).unwrap_err());
    assert_eq!(
        error,
        "ipchains: 1 of 2 failed; first: `/sbin/ipchains -D input -s 192.0.2.7 -j DENY -l` \
         exited with exit status: 1"
    );
    assert_eq!(
        taken(&tools),
        [
            "/sbin/ipchains -D input -s 192.0.2.7 -j DENY -l",
            "/sbin/ipchains -D input -s 198.51.100.9 -j DENY -l",
        ]
    );
}

#[test]
fn ipfw_restore_replaces_rule_1_so_nothing_is_doubled() {
    let tools = tools();
    let now = SystemTime::now();
    let mut ipfw = action_for(LegacyTool::Ipfw, &tools);
    let blocks = [record(BLOCKED_V4), record(OTHER_V4)];
    let due: Vec<&BlockRecord> = blocks.iter().collect();

    // No rule 1 yet (ipfw exits 69, EX_UNAVAILABLE): not an error, the adds follow.
    tools.answer([Reply::status(69).with_stderr("ipfw: rule 1: setsockopt(IP_FW_XDEL)")]);
    ipfw.init(&due, now).unwrap();
    ipfw.init(&due, now).unwrap();
    let restore_calls = [
        "/sbin/ipfw delete 1",
        "/sbin/ipfw add 1 deny all from 192.0.2.7:255.255.255.255 to any",
        "/sbin/ipfw add 1 deny all from 198.51.100.9:255.255.255.255 to any",
    ];
    assert_eq!(taken(&tools), [restore_calls, restore_calls].concat());

    // A failed re-add is reported, and the address stays due for the next rebuild.
    tools.answer(statuses(&[0, 0, 1]));
    let error = message(ipfw.release(&[&record(BLOCKED_V6)]).unwrap_err());
    assert_eq!(
        error,
        "ipfw: 1 of 2 addresses could not be re-added to ipfw rule 1; first: \
         `/sbin/ipfw add 1 deny all from 198.51.100.9:255.255.255.255 to any` exited with exit \
         status: 1"
    );
    tools.take_calls();
    ipfw.release(&[&record(BLOCKED_V4)]).unwrap();
    assert_eq!(
        taken(&tools),
        [
            "/sbin/ipfw delete 1",
            "/sbin/ipfw add 1 deny all from 198.51.100.9:255.255.255.255 to any",
        ]
    );
}

#[test]
fn ipfilter_feeds_the_rule_on_stdin_with_and_without_an_interface() {
    let tools = tools();
    let now = SystemTime::now();

    let mut on_em0 = recording(LegacyTool::Ipfilter, Some("em0"), &tools).unwrap();
    on_em0.block(&[&record(BLOCKED_V4)], now).unwrap();
    on_em0.release(&[&record(BLOCKED_V4)]).unwrap();
    on_em0.block(&[&record(BLOCKED_V6)], now).unwrap();
    assert_eq!(
        taken(&tools),
        [
            "/sbin/ipf -f - < block in log on em0 from 192.0.2.7/32 to any\n",
            "/sbin/ipf -r -f - < block in log on em0 from 192.0.2.7/32 to any\n",
            "/sbin/ipf -6 -f - < block in log on em0 from 2001:db8::7/128 to any\n",
        ]
    );

    let mut anywhere = action_for(LegacyTool::Ipfilter, &tools);
    anywhere.block(&[&record(BLOCKED_V4)], now).unwrap();
    anywhere.block(&[&record(BLOCKED_V6)], now).unwrap();
    anywhere.release(&[&record(BLOCKED_V6)]).unwrap();
    assert_eq!(
        taken(&tools),
        [
            "/sbin/ipf -f - < block in log from 192.0.2.7/32 to any\n",
            "/sbin/ipf -6 -f - < block in log from 2001:db8::7/128 to any\n",
            "/sbin/ipf -6 -r -f - < block in log from 2001:db8::7/128 to any\n",
        ]
    );
}

#[test]
fn an_interface_name_that_could_alter_the_ipf_rule_is_refused() {
    let tools = tools();
    for name in ["em0 from any", "em#0", "em0\nblock in all"] {
        let refused = recording(LegacyTool::Ipfilter, Some(name), &tools);
        let error = message(refused.err().expect("a bad interface name must be refused"));
        assert!(error.starts_with("ipfilter: ipfilter_interface"), "{error}");
    }
    assert!(tools.take_calls().is_empty());
}

// ---- describe and what runs ----

/// A recorded call as `describe` writes it: the program by the name it is found by.
fn as_described(invocation: &Invocation) -> String {
    let name = invocation.program.file_name().unwrap_or_default();
    Invocation {
        program: PathBuf::from(name),
        ..invocation.clone()
    }
    .to_string()
}

/// The command a `describe` line starts with (`block IPv4: CMD, unless ...`) and the one it
/// quotes in backticks, if any, for `source`.
fn described_commands(lines: &[String], prefix: &str, source: &str) -> (String, Option<String>) {
    let line = lines
        .iter()
        .find_map(|line| line.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in {lines:?}"))
        .replace("$TARGET$", source);
    let first = line.split(", ").next().unwrap_or_default().to_owned();
    let quoted = line.split('`').nth(1).map(str::to_owned);
    (first, quoted)
}

#[test]
fn describe_matches_what_the_backend_runs() {
    let now = SystemTime::now();
    let variants = ALL_TOOLS
        .iter()
        .map(|tool| (*tool, None))
        .chain([(LegacyTool::Ipfilter, Some("em0"))]);
    for (tool, interface) in variants {
        let lines = describe(tool, interface);
        for (label, source) in [("IPv4", BLOCKED_V4), ("IPv6", BLOCKED_V6)] {
            let case = format!("{tool} {label} (interface {interface:?})");
            let tools = tools();
            let mut action = recording(tool, interface, &tools).unwrap();
            let blocked = record(source);
            let skipped = format!("{label}: {tool} cannot filter {label}");
            if lines.iter().any(|line| line.starts_with(&skipped)) {
                action.block(&[&blocked], now).unwrap();
                action.release(&[&blocked]).unwrap();
                assert!(tools.take_calls().is_empty(), "{case}");
                continue;
            }

            let (insert, check) = described_commands(&lines, &format!("block {label}: "), source);
            if check.is_some() {
                tools.answer(statuses(&[1])); // not there
            }
            action.block(&[&blocked], now).unwrap();
            let ran: Vec<String> = tools.take_calls().iter().map(as_described).collect();
            let expected: Vec<String> = check.clone().into_iter().chain([insert.clone()]).collect();
            assert_eq!(ran, expected, "{case}: block");

            let (delete, check) = described_commands(&lines, &format!("release {label}: "), source);
            if check.is_some() {
                tools.answer(statuses(&[0, 0, 1])); // there, deleted, gone
            }
            action.release(&[&blocked]).unwrap();
            let ran: Vec<String> = tools.take_calls().iter().map(as_described).collect();
            let expected = match check {
                Some(check) => vec![check.clone(), delete.clone(), check],
                None => vec![delete.clone()],
            };
            assert_eq!(ran, expected, "{case}: release");

            // Where a restore is described, it is the release command, then the block command.
            if lines
                .iter()
                .any(|line| line.starts_with(&format!("restore {label}: ")))
            {
                let mut restarted = LegacyAction::new(tool, interface.map(str::to_owned))
                    .with_executor(tools.clone());
                restarted.init(&[&blocked], now).unwrap();
                let ran: Vec<String> = tools.take_calls().iter().map(as_described).collect();
                assert_eq!(ran, vec![delete, insert], "{case}: restore");
            }
        }
    }
}

// ---- finding the tools ----

#[test]
fn a_missing_tool_fails_init_and_check_naming_tool_and_path() {
    // iptables without ip6tables: IPv6 blocks could never work, so the action is refused.
    let tools = RecordingExecutor::new(SEARCH_PATH, &["/sbin/iptables", "/usr/sbin/ipchains"]);

    let error = message(recording(LegacyTool::Ipfw, None, &tools).err().unwrap());
    assert_eq!(error, "ipfw: ipfw not found in PATH (/usr/sbin:/sbin)");
    let error = message(recording(LegacyTool::Iptables, None, &tools).err().unwrap());
    assert_eq!(
        error,
        "iptables: ip6tables not found in PATH (/usr/sbin:/sbin)"
    );
    assert_eq!(
        check(LegacyTool::Ipfilter, &tools),
        vec!["action ipfilter: ipf not found in PATH (/usr/sbin:/sbin)"]
    );
    assert_eq!(
        check(LegacyTool::Iptables, &tools),
        vec!["action iptables: ip6tables not found in PATH (/usr/sbin:/sbin)"]
    );
    assert!(check(LegacyTool::Ipchains, &tools).is_empty());
    // Found tools resolve to absolute paths along the search path, and run from there.
    let mut ipchains = action_for(LegacyTool::Ipchains, &tools);
    assert_eq!(
        ipchains.program_paths(),
        vec![PathBuf::from("/usr/sbin/ipchains")]
    );
    ipchains
        .block(&[&record(BLOCKED_V4)], SystemTime::now())
        .unwrap();
    assert_eq!(
        taken(&tools),
        ["/usr/sbin/ipchains -I input -s 192.0.2.7 -j DENY -l"]
    );
}

#[test]
fn building_and_checking_an_action_runs_nothing() {
    let tools = tools();
    for tool in ALL_TOOLS {
        let action = LegacyAction::new(tool, Some("em0".to_owned())).with_executor(tools.clone());
        assert!(action.check().is_empty(), "{tool}");
        assert!(!action.describe().is_empty(), "{tool}");
        assert!(
            action.program_paths().is_empty(),
            "{tool}: looked up before init"
        );
    }
    assert!(tools.take_calls().is_empty());
}

// ---- real iptables in a namespace ----

/// An action that finds the real tools in PATH and runs them, after an `init` with nothing due.
fn spawning(tool: LegacyTool) -> LegacyAction {
    started(LegacyAction::new(tool, None)).unwrap()
}

/// What the namespace test does in and with its namespace.
trait DaemonNamespace {
    /// Runs `body` on a thread that has entered the namespace and then, like the daemon, kept
    /// only CAP_NET_ADMIN; the programs the action starts inherit both.
    fn run_as_daemon<T: Send>(&self, body: impl FnOnce() -> T + Send) -> T;
    /// `program -S INPUT` read from outside the test's thread, in the namespace.
    fn input_rules(&self, program: &str) -> Vec<String>;
    fn count(&self, program: &str, rule: &str) -> usize;
}

impl DaemonNamespace for Netns {
    fn run_as_daemon<T: Send>(&self, body: impl FnOnce() -> T + Send) -> T {
        self.enter(|| {
            keep_only_net_admin();
            body()
        })
    }

    fn input_rules(&self, program: &str) -> Vec<String> {
        let output = self.exec(&[program, "-S", "INPUT"]);
        output.lines().map(str::to_owned).collect()
    }

    fn count(&self, program: &str, rule: &str) -> usize {
        self.input_rules(program)
            .iter()
            .filter(|line| *line == rule)
            .count()
    }
}

/// The daemon's capability drop, on this thread only (capabilities are per thread).
fn keep_only_net_admin() {
    let keep: CapsHashSet = [Capability::CAP_NET_ADMIN].into_iter().collect();
    for capability in caps::read(None, CapSet::Bounding).unwrap() {
        if capability != Capability::CAP_NET_ADMIN {
            caps::drop(None, CapSet::Bounding, capability).unwrap();
        }
    }
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).unwrap();
    caps::set(None, CapSet::Effective, &keep).unwrap();
    caps::set(None, CapSet::Permitted, &keep).unwrap();
    for set in [CapSet::Bounding, CapSet::Effective, CapSet::Permitted] {
        assert_eq!(caps::read(None, set).unwrap(), keep, "{set:?}");
    }
}

#[test]
fn real_iptables_places_one_rule_and_removes_every_copy() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test creates a network namespace and needs root"
    );
    let netns = Netns::new("legacy", "ipt");
    let v4_rule = "-A INPUT -s 192.0.2.7/32 -j DROP";
    let v6_rule = "-A INPUT -s 2001:db8::7/128 -j DROP";
    let now = SystemTime::now();

    netns.run_as_daemon(|| {
        let mut first_run = spawning(LegacyTool::Iptables);
        first_run.block(&[&record(BLOCKED_V4)], now).unwrap();
        first_run.block(&[&record(BLOCKED_V4)], now).unwrap();
        first_run.block(&[&record(BLOCKED_V6)], now).unwrap();
        first_run.block(&[&record(BLOCKED_V6)], now).unwrap();
    });
    assert_eq!(netns.count("iptables", v4_rule), 1);
    assert_eq!(netns.count("ip6tables", v6_rule), 1);
    assert!(
        !netns
            .input_rules("iptables")
            .iter()
            .any(|line| line.contains("2001:db8")),
        "an IPv6 rule went to iptables"
    );

    // A restart: a new action restores the same blocks; the rules stay single.
    netns.run_as_daemon(|| {
        let mut second_run = spawning(LegacyTool::Iptables);
        second_run
            .init(&[&record(BLOCKED_V4), &record(BLOCKED_V6)], now)
            .unwrap();
    });
    assert_eq!(netns.count("iptables", v4_rule), 1);
    assert_eq!(netns.count("ip6tables", v6_rule), 1);

    // Release removes the rule, including a copy someone else appended.
    netns.exec(&["iptables", "-A", "INPUT", "-s", BLOCKED_V4, "-j", "DROP"]);
    assert_eq!(netns.count("iptables", v4_rule), 2);
    netns.run_as_daemon(|| {
        let mut third_run = spawning(LegacyTool::Iptables);
        third_run.release(&[&record(BLOCKED_V4)]).unwrap();
        third_run.release(&[&record(BLOCKED_V6)]).unwrap();
        // Releasing again finds nothing and is not an error.
        third_run.release(&[&record(BLOCKED_V4)]).unwrap();
    });
    assert_eq!(netns.count("iptables", v4_rule), 0);
    assert_eq!(netns.count("ip6tables", v6_rule), 0);
}
