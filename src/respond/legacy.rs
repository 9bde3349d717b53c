//! The legacy firewall actions PortSentry shipped (iptables, ipchains, ipfwadm, ipfw, ipfilter):
//! each block and release runs the tool itself, with an argv built from the blocked address and
//! never through a shell. It does not read firewall state back beyond `iptables -C`, and it does
//! not decide when to block or release; the responder does. Finding and running the tools is an
//! [`Executor`]'s job, so that what runs can be recorded instead (tests/respond_legacy.rs).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use caps::Capability;
use log::{debug, info, warn};

use super::executor::{Executor, SpawningExecutor};
use super::process::{Invocation, Outcome};
use super::{attempt_each, Action, ActionError};
use crate::store::BlockRecord;

/// How long one tool invocation may take before it is killed. Firewall tools answer in
/// milliseconds; a hung one must not stall the responder, which also lifts expired blocks.
pub(crate) const TOOL_TIMEOUT: Duration = Duration::from_secs(10);
/// A release deletes the iptables rule until `-C` no longer finds it, so a rule inserted twice by
/// hand or by PortSentry goes too. The bound stops a tool that reports success without deleting.
const MAX_IPTABLES_DELETIONS: usize = 32;
/// PortSentry's ipfw block command puts every blocked address in this rule number.
const IPFW_RULE_NUMBER: &str = "1";
/// Written in place of the address by [`describe`], as in PortSentry's own config.
const TARGET_PLACEHOLDER: &str = "$TARGET$";

/// One of PortSentry's firewall tools. `Display` gives the action's word in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegacyTool {
    /// Linux netfilter via `iptables`, and `ip6tables` for IPv6 sources.
    Iptables,
    /// Linux 2.2 `ipchains`; IPv4 only.
    Ipchains,
    /// Linux 2.0 `ipfwadm`; IPv4 only.
    Ipfwadm,
    /// FreeBSD `ipfw`.
    Ipfw,
    /// IPFilter's `ipf` (BSDs, Solaris/illumos).
    Ipfilter,
}

impl LegacyTool {
    /// The action's word in the config file, also the action's name in logs.
    pub fn action_name(self) -> &'static str {
        match self {
            LegacyTool::Iptables => "iptables",
            LegacyTool::Ipchains => "ipchains",
            LegacyTool::Ipfwadm => "ipfwadm",
            LegacyTool::Ipfw => "ipfw",
            LegacyTool::Ipfilter => "ipfilter",
        }
    }

    /// Every program the action runs; all must be installed for it to work.
    pub(crate) fn programs(self) -> &'static [&'static str] {
        match self {
            LegacyTool::Iptables => &["iptables", "ip6tables"],
            LegacyTool::Ipchains => &["ipchains"],
            LegacyTool::Ipfwadm => &["ipfwadm"],
            LegacyTool::Ipfw => &["ipfw"],
            LegacyTool::Ipfilter => &["ipf"],
        }
    }
}

impl fmt::Display for LegacyTool {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.action_name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(address: IpAddr) -> Family {
        match address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// The commands that place and remove one address's rule, for one tool and address family.
/// Built from the address's text, or from `$TARGET$` for [`describe`], so what is described is
/// exactly what runs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RuleCommands {
    program: &'static str,
    /// Exits 0 when the rule is in place, 1 when it is not; only iptables has one.
    check: Option<Vec<String>>,
    insert: Vec<String>,
    delete: Vec<String>,
    /// Fed to `insert` and `delete` on standard input (ipf reads its rules there).
    stdin: Option<String>,
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

/// The commands for `target` (an address's text or the placeholder); None when the tool cannot
/// filter that family. Each argument is one argv element; nothing is ever split or re-parsed.
fn rule_commands(
    tool: LegacyTool,
    family: Family,
    target: &str,
    ipfilter_interface: Option<&str>,
) -> Option<RuleCommands> {
    let commands = match tool {
        LegacyTool::Iptables => {
            let rule = |verb: &str| owned(&[verb, "INPUT", "-s", target, "-j", "DROP"]);
            RuleCommands {
                program: match family {
                    Family::V4 => "iptables",
                    Family::V6 => "ip6tables",
                },
                check: Some(rule("-C")),
                insert: rule("-I"),
                delete: rule("-D"),
                stdin: None,
            }
        }
        LegacyTool::Ipchains => {
            if family == Family::V6 {
                return None;
            }
            let rule = |verb: &str| owned(&[verb, "input", "-s", target, "-j", "DENY", "-l"]);
            RuleCommands {
                program: "ipchains",
                check: None,
                insert: rule("-I"),
                delete: rule("-D"),
                stdin: None,
            }
        }
        LegacyTool::Ipfwadm => {
            if family == Family::V6 {
                return None;
            }
            let rule = |verb: &str| owned(&["-I", verb, "deny", "-S", target, "-o"]);
            RuleCommands {
                program: "ipfwadm",
                check: None,
                insert: rule("-i"),
                delete: rule("-d"),
                stdin: None,
            }
        }
        LegacyTool::Ipfw => {
            // PortSentry's host mask form only parses for IPv4; ipfw reads an IPv6 source
            // as address/prefix length.
            let source = match family {
                Family::V4 => format!("{target}:255.255.255.255"),
                Family::V6 => format!("{target}/128"),
            };
            let mut insert = owned(&["add", IPFW_RULE_NUMBER, "deny", "all", "from"]);
            insert.push(source);
            insert.extend(owned(&["to", "any"]));
            RuleCommands {
                program: "ipfw",
                check: None,
                insert,
                delete: owned(&["delete", IPFW_RULE_NUMBER]),
                stdin: None,
            }
        }
        LegacyTool::Ipfilter => {
            let on_interface = ipfilter_interface
                .map(|name| format!(" on {name}"))
                .unwrap_or_default();
            let (family_flag, prefix_length): (&[&str], u8) = match family {
                Family::V4 => (&[], 32),
                // ipf parses IPv6 rules only when told to.
                Family::V6 => (&["-6"], 128),
            };
            let mut insert = owned(family_flag);
            insert.extend(owned(&["-f", "-"]));
            let mut delete = owned(family_flag);
            delete.extend(owned(&["-r", "-f", "-"]));
            RuleCommands {
                program: "ipf",
                check: None,
                insert,
                delete,
                stdin: Some(format!(
                    "block in log{on_interface} from {target}/{prefix_length} to any\n"
                )),
            }
        }
    };
    Some(commands)
}

/// Human-readable lines giving the exact commands an action runs, with `$TARGET$` standing for
/// the blocked address, for `nfsentry rules --actions`.
pub fn describe(tool: LegacyTool, ipfilter_interface: Option<&str>) -> Vec<String> {
    let mut lines = Vec::new();
    for family in [Family::V4, Family::V6] {
        let label = family.label();
        let Some(commands) = rule_commands(tool, family, TARGET_PLACEHOLDER, ipfilter_interface)
        else {
            lines.push(format!(
                "{label}: {tool} cannot filter {label}; such sources are logged and skipped"
            ));
            continue;
        };
        let shown = |args: &[String]| {
            Invocation {
                program: PathBuf::from(commands.program),
                args: args.to_vec(),
                stdin: commands.stdin.clone().map(String::into_bytes),
            }
            .to_string()
        };
        let insert = shown(&commands.insert);
        let delete = shown(&commands.delete);
        match (&commands.check, tool) {
            (Some(check), _) => {
                let check = shown(check);
                lines.push(format!(
                    "block {label}: {insert}, unless `{check}` finds the rule in place"
                ));
                lines.push(format!(
                    "release {label}: {delete}, repeated while `{check}` finds the rule"
                ));
            }
            (None, LegacyTool::Ipfw) => {
                lines.push(format!("block {label}: {insert}"));
                lines.push(format!(
                    "release {label}: {delete}, then the block command again for every address \
                     still blocked (ipfw deletes by rule number only, so nfsentry owns rule {})",
                    IPFW_RULE_NUMBER
                ));
            }
            (None, _) => {
                lines.push(format!("block {label}: {insert}"));
                lines.push(format!("release {label}: {delete}"));
                lines.push(format!(
                    "restore {label}: the release command (a failure means nothing to remove), \
                     then the block command"
                ));
            }
        }
    }
    lines
}

/// The tool's programs, each as the absolute path `executor` finds it at; the first one missing
/// is the error.
fn find_programs(
    tool: LegacyTool,
    executor: &dyn Executor,
) -> Result<Vec<(&'static str, PathBuf)>, ActionError> {
    tool.programs()
        .iter()
        .map(|program| {
            executor
                .find(program)
                .map(|path| (*program, path))
                .map_err(|missing| ActionError::MissingTool {
                    action: tool.action_name(),
                    program: missing.program,
                    // The names above are bare, so they were searched for.
                    search_path: missing.search_path.unwrap_or_default(),
                })
        })
        .collect()
}

/// Blocks and releases addresses with one legacy firewall tool.
///
/// The tools other than iptables cannot be asked whether a rule is in place, so the action
/// remembers which addresses it placed during this run: a second block of the same address does
/// nothing, and `init` removes a rule before placing it so a restart does not double it.
pub struct LegacyAction {
    tool: LegacyTool,
    ipfilter_interface: Option<String>,
    /// Absolute paths of `tool.programs()`, resolved once by `init` so a later PATH change
    /// cannot swap them.
    programs: Vec<(&'static str, PathBuf)>,
    /// Addresses this action placed a rule for and has not released.
    blocked: BTreeSet<IpAddr>,
    timeout: Duration,
    executor: Box<dyn Executor>,
}

impl LegacyAction {
    /// An action that finds its tool in the daemon's PATH and runs it; nothing is looked up
    /// or run before `init`.
    pub fn new(tool: LegacyTool, ipfilter_interface: Option<String>) -> LegacyAction {
        LegacyAction {
            tool,
            ipfilter_interface,
            programs: Vec::new(),
            blocked: BTreeSet::new(),
            timeout: TOOL_TIMEOUT,
            executor: Box::new(SpawningExecutor::new()),
        }
    }

    /// The same action, finding and running its tool through `executor` instead.
    pub fn with_executor(mut self, executor: impl Executor + 'static) -> LegacyAction {
        self.executor = Box::new(executor);
        self
    }

    /// An `ipfilter_interface` that is not a plain interface name, said as `check` says it.
    fn interface_problem(&self) -> Option<String> {
        let name = self.ipfilter_interface.as_deref()?;
        (!is_plain_interface_name(name)).then(|| {
            format!(
                "ipfilter_interface {name:?} is not a plain interface name (letters, digits, \
                 '.', '_', '-'; at most {INTERFACE_NAME_MAX_BYTES} bytes): it goes into an ipf \
                 rule line"
            )
        })
    }

    /// Where `init` found the tool's programs, in the order `tool.programs()` names them.
    pub fn program_paths(&self) -> Vec<PathBuf> {
        self.programs.iter().map(|(_, path)| path.clone()).collect()
    }

    /// Checks the interface name and finds the tool's programs now; fails naming the tool and
    /// the PATH searched when one is missing.
    fn take_up(&mut self) -> Result<(), ActionError> {
        if let Some(detail) = self.interface_problem() {
            return Err(ActionError::Config {
                action: self.tool.action_name(),
                detail,
            });
        }
        self.programs = find_programs(self.tool, self.executor.as_ref())?;
        Ok(())
    }

    fn failed(&self, detail: String) -> ActionError {
        ActionError::Program {
            action: self.tool.action_name(),
            detail,
        }
    }

    /// The commands for `address`, or None (logged) when the tool cannot filter its family.
    fn commands_for(&self, address: IpAddr) -> Option<RuleCommands> {
        let family = Family::of(address);
        let commands = rule_commands(
            self.tool,
            family,
            &address.to_string(),
            self.ipfilter_interface.as_deref(),
        );
        if commands.is_none() {
            warn!(
                "{}: cannot filter {} source {address}; skipped",
                self.tool,
                family.label()
            );
        }
        commands
    }

    fn invocation(
        &self,
        commands: &RuleCommands,
        args: &[String],
    ) -> Result<Invocation, ActionError> {
        let program = self
            .programs
            .iter()
            .find(|(name, _)| *name == commands.program)
            .map(|(_, path)| path.clone())
            .ok_or_else(|| self.failed(format!("{} was not looked up", commands.program)))?;
        Ok(Invocation {
            program,
            args: args.to_vec(),
            stdin: commands.stdin.clone().map(String::into_bytes),
        })
    }

    /// Runs one command and logs how it ended; a failure to run at all (not found, timed out)
    /// is an error, a non-zero exit is for the caller to judge.
    fn execute(&self, invocation: &Invocation) -> Result<Outcome, ActionError> {
        let outcome = self
            .executor
            .run(invocation, self.timeout)
            .map_err(|e| self.failed(format!("`{invocation}`: {e}")))?;
        if outcome.timed_out {
            return Err(self.failed(format!(
                "`{invocation}`: did not finish within {:?}; killed it{}",
                self.timeout,
                outcome.stderr_suffix()
            )));
        }
        debug!(
            "{}: `{invocation}` exited with {}{}",
            self.tool,
            outcome.status,
            outcome.stderr_suffix()
        );
        Ok(outcome)
    }

    /// Runs a command that must succeed.
    fn execute_ok(&self, invocation: &Invocation) -> Result<(), ActionError> {
        let outcome = self.execute(invocation)?;
        if !outcome.status.success() {
            return Err(self.failed(format!(
                "`{invocation}` exited with {}{}",
                outcome.status,
                outcome.stderr_suffix()
            )));
        }
        let said = outcome.stderr_text();
        if !said.is_empty() {
            warn!("{}: `{invocation}` succeeded but said: {said}", self.tool);
        }
        info!("{}: ran `{invocation}`", self.tool);
        Ok(())
    }

    /// Asks iptables whether the rule is in place (`-C` exits 0 when it is, 1 when it is not).
    fn is_in_place(&self, commands: &RuleCommands, check: &[String]) -> Result<bool, ActionError> {
        let invocation = self.invocation(commands, check)?;
        let outcome = self.execute(&invocation)?;
        match outcome.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(self.failed(format!(
                "`{invocation}` exited with {}{}",
                outcome.status,
                outcome.stderr_suffix()
            ))),
        }
    }

    /// Places the rule for `address` unless it is known to be in place: asked of iptables,
    /// remembered from this run for the others.
    fn block_one(&mut self, address: IpAddr) -> Result<(), ActionError> {
        let Some(commands) = self.commands_for(address) else {
            return Ok(());
        };
        if let Some(check) = &commands.check {
            if self.is_in_place(&commands, check)? {
                debug!("{}: {address} is already blocked", self.tool);
                self.blocked.insert(address);
                return Ok(());
            }
        } else if self.blocked.contains(&address) {
            debug!("{}: {address} is already blocked by this run", self.tool);
            return Ok(());
        }
        self.execute_ok(&self.invocation(&commands, &commands.insert)?)?;
        self.blocked.insert(address);
        Ok(())
    }

    /// Deletes the rule for `address`; iptables is asked again after each delete, so every copy
    /// goes.
    fn release_one(&mut self, address: IpAddr) -> Result<(), ActionError> {
        let Some(commands) = self.commands_for(address) else {
            return Ok(());
        };
        self.blocked.remove(&address);
        if self.tool == LegacyTool::Ipfw {
            return self.rebuild_ipfw_rule();
        }
        let delete = self.invocation(&commands, &commands.delete)?;
        let Some(check) = &commands.check else {
            return self.execute_ok(&delete);
        };
        for _ in 0..MAX_IPTABLES_DELETIONS {
            if !self.is_in_place(&commands, check)? {
                return Ok(());
            }
            self.execute_ok(&delete)?;
        }
        Err(self.failed(format!(
            "the rule for {address} is still in place after {MAX_IPTABLES_DELETIONS} deletions"
        )))
    }

    /// For tools without a check: removes any rule an earlier run left, then places it anew, so
    /// the address ends up blocked exactly once whether or not the rule survived.
    fn restore_one(&mut self, address: IpAddr) -> Result<(), ActionError> {
        let Some(commands) = self.commands_for(address) else {
            return Ok(());
        };
        let outcome = self.execute(&self.invocation(&commands, &commands.delete)?)?;
        if !outcome.status.success() {
            debug!("{}: no earlier rule for {address} to remove", self.tool);
        }
        self.blocked.remove(&address);
        self.block_one(address)
    }

    /// ipfw deletes by rule number only and PortSentry's block command puts every address in
    /// rule 1, so one address is released by deleting rule 1 and adding the others back. Those
    /// others are unblocked for the few milliseconds this takes; any foreign rule numbered 1 is
    /// lost, which is why `describe` says nfsentry owns rule 1.
    fn rebuild_ipfw_rule(&mut self) -> Result<(), ActionError> {
        let ipfw = RuleCommands {
            program: "ipfw",
            check: None,
            insert: Vec::new(),
            delete: owned(&["delete", IPFW_RULE_NUMBER]),
            stdin: None,
        };
        let delete = self.invocation(&ipfw, &ipfw.delete)?;
        let outcome = self.execute(&delete)?;
        if !outcome.status.success() {
            // ipfw also exits non-zero when there is no rule 1, which is the usual case after a
            // reboot; a real fault shows again when the adds below fail.
            debug!(
                "{}: `{delete}` exited with {}{}",
                self.tool,
                outcome.status,
                outcome.stderr_suffix()
            );
        }
        let still_blocked: Vec<IpAddr> = self.blocked.iter().copied().collect();
        let mut failures = Vec::new();
        for address in still_blocked {
            let added = self.commands_for(address).map_or(Ok(()), |commands| {
                self.invocation(&commands, &commands.insert)
                    .and_then(|add| self.execute_ok(&add))
            });
            if let Err(e) = added {
                failures.push(e);
            }
        }
        self.summarise(failures, self.blocked.len(), "re-added to ipfw rule 1")
    }

    /// One error for a batch: how many failed, and the first failure's message.
    fn summarise(
        &self,
        failures: Vec<ActionError>,
        total: usize,
        what: &str,
    ) -> Result<(), ActionError> {
        let count = failures.len();
        match failures.into_iter().next() {
            None => Ok(()),
            Some(first) => Err(self.failed(format!(
                "{count} of {total} addresses could not be {what}; first: {}",
                first.detail()
            ))),
        }
    }
}

impl Action for LegacyAction {
    fn name(&self) -> &'static str {
        self.tool.action_name()
    }

    fn check(&self) -> Vec<String> {
        let missing = find_programs(self.tool, self.executor.as_ref())
            .err()
            .map(|e| e.detail());
        self.interface_problem()
            .into_iter()
            .chain(missing)
            .collect()
    }

    fn describe(&self) -> Vec<String> {
        describe(self.tool, self.ipfilter_interface.as_deref())
    }

    /// iptables-legacy and its kin need CAP_NET_RAW besides CAP_NET_ADMIN.
    fn capabilities(&self) -> &'static [Capability] {
        &[Capability::CAP_NET_RAW]
    }

    fn runs_programs(&self) -> bool {
        true
    }

    /// Finds the programs, then re-applies the due blocks. iptables is asked whether each rule
    /// is still in place; the tools that cannot be asked have any rule an earlier run left
    /// removed before it is placed again, and ipfw has its rule 1 rebuilt once for them all.
    fn init(&mut self, due: &[&BlockRecord], _now: SystemTime) -> Result<(), ActionError> {
        self.take_up()?;
        if due.is_empty() {
            return Ok(());
        }
        if self.tool == LegacyTool::Ipfw {
            self.blocked.extend(due.iter().map(|block| block.source));
            return self.rebuild_ipfw_rule();
        }
        let mut failures = Vec::new();
        for block in due {
            let restored = if self.tool == LegacyTool::Iptables {
                self.block_one(block.source)
            } else {
                self.restore_one(block.source)
            };
            if let Err(e) = restored {
                failures.push(e);
            }
        }
        self.summarise(failures, due.len(), "restored")
    }

    fn block(&mut self, blocks: &[&BlockRecord], _now: SystemTime) -> Result<(), ActionError> {
        let action = self.tool.action_name();
        attempt_each(action, blocks, |block| self.block_one(block.source))
    }

    /// For ipfw, one rebuild of rule 1 for the whole batch: `delete 1`, then one add per address
    /// still blocked, where releasing one by one would re-add the survivors once per released
    /// address. The other tools delete each address's own rule.
    fn release(&mut self, blocks: &[&BlockRecord]) -> Result<(), ActionError> {
        if self.tool != LegacyTool::Ipfw {
            let action = self.tool.action_name();
            return attempt_each(action, blocks, |block| self.release_one(block.source));
        }
        for block in blocks {
            self.blocked.remove(&block.source);
        }
        self.rebuild_ipfw_rule()
    }
}

/// Linux allows up to 15 bytes; BSD and Solaris names are shorter.
const INTERFACE_NAME_MAX_BYTES: usize = 15;

/// The interface name goes into a rule line ipf parses, where a space, `#` or newline would
/// change the rule's meaning (`#` starts a comment, leaving "block in log on em" — block all).
pub fn is_plain_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= INTERFACE_NAME_MAX_BYTES
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn iptables_commands_use_ip6tables_for_ipv6() {
        let v4 = rule_commands(LegacyTool::Iptables, Family::V4, "192.0.2.7", None).unwrap();
        assert_eq!(v4.program, "iptables");
        assert_eq!(v4.check, Some(args("-C INPUT -s 192.0.2.7 -j DROP")));
        assert_eq!(v4.insert, args("-I INPUT -s 192.0.2.7 -j DROP"));
        assert_eq!(v4.delete, args("-D INPUT -s 192.0.2.7 -j DROP"));
        let v6 = rule_commands(LegacyTool::Iptables, Family::V6, "2001:db8::7", None).unwrap();
        assert_eq!(v6.program, "ip6tables");
        assert_eq!(v6.insert, args("-I INPUT -s 2001:db8::7 -j DROP"));
    }

    #[test]
    fn ipchains_and_ipfwadm_refuse_ipv6() {
        for tool in [LegacyTool::Ipchains, LegacyTool::Ipfwadm] {
            assert!(rule_commands(tool, Family::V6, "2001:db8::7", None).is_none());
            assert!(rule_commands(tool, Family::V4, "192.0.2.7", None).is_some());
        }
    }

    #[test]
    fn ipfilter_interface_is_optional_and_ipv6_needs_the_flag() {
        let with = rule_commands(LegacyTool::Ipfilter, Family::V4, "192.0.2.7", Some("em0"));
        let with = with.unwrap();
        assert_eq!(with.insert, args("-f -"));
        assert_eq!(with.delete, args("-r -f -"));
        assert_eq!(
            with.stdin.as_deref(),
            Some("block in log on em0 from 192.0.2.7/32 to any\n")
        );
        let v6 = rule_commands(LegacyTool::Ipfilter, Family::V6, "2001:db8::7", None).unwrap();
        assert_eq!(v6.insert, args("-6 -f -"));
        assert_eq!(v6.delete, args("-6 -r -f -"));
        assert_eq!(
            v6.stdin.as_deref(),
            Some("block in log from 2001:db8::7/128 to any\n")
        );
    }

    #[test]
    fn describe_shows_portsentry_commands_with_the_placeholder() {
        let iptables = describe(LegacyTool::Iptables, None);
        assert!(iptables.contains(
            &"block IPv4: iptables -I INPUT -s $TARGET$ -j DROP, unless \
              `iptables -C INPUT -s $TARGET$ -j DROP` finds the rule in place"
                .to_owned()
        ));
        assert!(iptables
            .iter()
            .any(|line| line.starts_with("release IPv6: ip6tables -D INPUT -s $TARGET$ -j DROP")));

        let ipfw = describe(LegacyTool::Ipfw, None);
        assert!(ipfw.contains(
            &"block IPv4: ipfw add 1 deny all from $TARGET$:255.255.255.255 to any".to_owned()
        ));
        assert!(ipfw
            .iter()
            .any(|line| line.starts_with("release IPv4: ipfw delete 1, then")));

        let ipfilter = describe(LegacyTool::Ipfilter, Some("em0"));
        assert!(ipfilter.contains(
            &"block IPv4: ipf -f - < 'block in log on em0 from $TARGET$/32 to any'".to_owned()
        ));
        let ipchains = describe(LegacyTool::Ipchains, None);
        assert!(
            ipchains.contains(&"block IPv4: ipchains -I input -s $TARGET$ -j DENY -l".to_owned())
        );
        assert!(ipchains
            .iter()
            .any(|line| line.starts_with("IPv6: ipchains cannot filter")));
        let ipfwadm = describe(LegacyTool::Ipfwadm, None);
        assert!(ipfwadm.contains(&"release IPv4: ipfwadm -I -d deny -S $TARGET$ -o".to_owned()));
    }

    #[test]
    fn interface_names_that_could_change_an_ipf_rule_are_refused() {
        for good in ["em0", "igb0.100", "e1000g0", "lagg_1", "vlan-7"] {
            assert!(is_plain_interface_name(good), "{good}");
        }
        for bad in ["", "em#0", "em0 ", "em0\nblock", "a/b", "sixteen-bytes-xx"] {
            assert!(!is_plain_interface_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_tool_that_overruns_its_time_is_an_error_naming_the_command() {
        let scratch = tempfile::tempdir().unwrap();
        let hung_tool = scratch.path().join("ipchains");
        fs::write(&hung_tool, "#!/bin/sh\necho hanging >&2\nexec sleep 30\n").unwrap();
        fs::set_permissions(&hung_tool, fs::Permissions::from_mode(0o755)).unwrap();
        // A real process, found by the real lookup in a search path given to it.
        let mut action = LegacyAction::new(LegacyTool::Ipchains, None)
            .with_executor(SpawningExecutor::with_search_path(scratch.path()));
        action.timeout = Duration::from_millis(200);
        action.init(&[], SystemTime::now()).unwrap();
        let source: IpAddr = "192.0.2.7".parse().unwrap();
        let started = std::time::Instant::now();
        let message = action.block_one(source).unwrap_err().detail();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            message,
            format!(
                "`{} -I input -s 192.0.2.7 -j DENY -l`: did not finish within 200ms; killed it; \
                 stderr: hanging",
                hung_tool.display()
            )
        );
        assert!(
            action.blocked.is_empty(),
            "a block that timed out is not placed"
        );
    }
}
