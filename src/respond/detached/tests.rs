//! The wrapper with a fake slow action: calls that wait at a gate the test opens, so that what
//! runs when is decided by the test, not by timing.

use super::*;
use crate::respond::attempt_each;
use std::sync::Mutex;

/// Far longer than any of these tests needs; only a broken wrapper waits this long.
const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Init(Vec<IpAddr>),
    Start(&'static str, Vec<IpAddr>),
    End(&'static str, Vec<IpAddr>),
    Fin,
}

/// Closed until the test opens it; calls that must wait, wait here.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn pass(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// What every instance of the fake shares with the test.
#[derive(Default)]
struct Script {
    events: Mutex<Vec<Event>>,
    gate: Gate,
    /// Calls naming one of these wait at the gate.
    held: Vec<IpAddr>,
    /// `init` waits at the gate.
    slow_init: bool,
    refuse_init: bool,
    /// Blocks of these fail.
    refuse: Vec<IpAddr>,
}

impl Script {
    fn note(&self, event: Event) {
        self.events.lock().unwrap().push(event);
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    fn position(&self, event: &Event) -> Option<usize> {
        self.events().iter().position(|seen| seen == event)
    }

    fn wait_for(&self, what: &str, event: &Event) -> usize {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(position) = self.position(event) {
                return position;
            }
            assert!(Instant::now() < deadline, "{what}: {:?}", self.events());
            thread::sleep(Duration::from_millis(2));
        }
    }
}

struct Fake(Arc<Script>);

impl Fake {
    fn call(&self, verb: &'static str, blocks: &[&BlockRecord]) -> Result<(), ActionError> {
        let sources = crate::respond::sources(blocks);
        self.0.note(Event::Start(verb, sources.clone()));
        if sources.iter().any(|source| self.0.held.contains(source)) {
            self.0.gate.pass();
        }
        let result = attempt_each("fake", blocks, |block| {
            match verb == "block" && self.0.refuse.contains(&block.source) {
                true => Err(ActionError::Program {
                    action: "fake",
                    detail: format!("refused {}", block.source),
                }),
                false => Ok(()),
            }
        });
        self.0.note(Event::End(verb, sources));
        result
    }
}

impl Action for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn check(&self) -> Vec<String> {
        vec!["fake problem".to_owned()]
    }
    fn describe(&self) -> Vec<String> {
        vec!["block: nothing".to_owned()]
    }
    fn runs_programs(&self) -> bool {
        true
    }
    fn init(&mut self, due: &[&BlockRecord], _now: SystemTime) -> Result<(), ActionError> {
        if self.0.slow_init {
            self.0.gate.pass();
        }
        self.0.note(Event::Init(crate::respond::sources(due)));
        match self.0.refuse_init {
            true => Err(ActionError::Config {
                action: "fake",
                detail: "cannot start".to_owned(),
            }),
            false => Ok(()),
        }
    }
    fn block(&mut self, blocks: &[&BlockRecord], _now: SystemTime) -> Result<(), ActionError> {
        self.call("block", blocks)
    }
    fn release(&mut self, blocks: &[&BlockRecord]) -> Result<(), ActionError> {
        self.call("release", blocks)
    }
    fn fin(&mut self) -> Result<(), ActionError> {
        self.0.note(Event::Fin);
        Ok(())
    }
}

fn shape(workers: usize, queue_bound: usize) -> Shape {
    Shape {
        workers,
        queue_bound,
        init_wait: PATIENCE,
        stop_wait: PATIENCE,
    }
}

fn detached(script: &Arc<Script>, shape: Shape) -> Detached {
    let script = Arc::clone(script);
    Detached::new(move || Box::new(Fake(Arc::clone(&script))), shape)
}

fn addr(last: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, last])
}

fn addrs(lasts: &[u8]) -> Vec<IpAddr> {
    lasts.iter().map(|last| addr(*last)).collect()
}

fn records(lasts: &[u8]) -> Vec<BlockRecord> {
    lasts
        .iter()
        .map(|last| BlockRecord::example(&addr(*last).to_string(), None))
        .collect()
}

fn refs(records: &[BlockRecord]) -> Vec<&BlockRecord> {
    records.iter().collect()
}

fn block(action: &mut Detached, lasts: &[u8]) {
    let records = records(lasts);
    action.block(&refs(&records), SystemTime::now()).unwrap();
}

fn release(action: &mut Detached, lasts: &[u8]) {
    let records = records(lasts);
    action.release(&refs(&records)).unwrap();
}

fn started(action: &mut Detached, due: &[u8]) {
    let due = records(due);
    action.init(&refs(&due), SystemTime::now()).unwrap();
}

#[test]
fn a_slow_block_returns_at_once_and_runs_behind_the_scenes() {
    let script = Arc::new(Script {
        held: addrs(&[1]),
        ..Script::default()
    });
    let mut action = detached(&script, shape(1, 8));
    started(&mut action, &[9]);
    // The call would never return if it waited for the action: the gate is closed.
    block(&mut action, &[1]);
    script.wait_for(
        "the worker took the block",
        &Event::Start("block", addrs(&[1])),
    );
    assert_eq!(script.position(&Event::End("block", addrs(&[1]))), None);

    script.gate.open();
    action.fin().unwrap();
    assert_eq!(
        script.events(),
        [
            Event::Init(addrs(&[9])),
            Event::Start("block", addrs(&[1])),
            Event::End("block", addrs(&[1])),
            Event::Fin,
        ]
    );
}

#[test]
fn a_release_never_overtakes_the_block_of_its_address_in_a_pool() {
    let script = Arc::new(Script {
        held: addrs(&[1]),
        ..Script::default()
    });
    let mut action = detached(&script, shape(3, 64));
    started(&mut action, &[]);
    block(&mut action, &[1, 2, 3]);
    release(&mut action, &[1, 2]);
    block(&mut action, &[4]);

    // Everything not waiting behind .1 gets done while .1's block hangs.
    for last in [2, 3, 4] {
        script.wait_for(
            "the blocks of free addresses",
            &Event::End("block", addrs(&[last])),
        );
    }
    assert_eq!(
        script.position(&Event::Start("release", addrs(&[1, 2]))),
        None
    );

    script.gate.open();
    let block_end = script.wait_for("the slow block", &Event::End("block", addrs(&[1])));
    let release_start = script.wait_for("the release", &Event::Start("release", addrs(&[1, 2])));
    assert!(block_end < release_start, "{:?}", script.events());
    action.fin().unwrap();
    let fins = script.events().iter().filter(|e| **e == Event::Fin).count();
    assert_eq!(fins, 3, "every worker's instance is finished");
}

#[test]
fn blocks_beyond_the_bound_are_dropped_and_counted_releases_never_are() {
    let script = Arc::new(Script {
        held: addrs(&[1]),
        ..Script::default()
    });
    let mut action = detached(&script, shape(1, 2));
    let counters = action.counters();
    started(&mut action, &[]);
    block(&mut action, &[1]);
    script.wait_for(
        "the worker took the first block",
        &Event::Start("block", addrs(&[1])),
    );

    block(&mut action, &[2, 3, 4, 5]);
    assert_eq!((counters.queued(), counters.dropped()), (3, 2));
    assert_eq!(counters.waiting(), 2);
    release(&mut action, &[2, 3, 4, 5]);
    assert_eq!(counters.waiting(), 6, "a release is queued past the bound");
    block(&mut action, &[6]);
    assert_eq!(counters.dropped(), 3);
    assert_eq!(
        counters.to_string(),
        "fake: 3 blocks queued, 6 waiting, 3 dropped (queue full), 0 failed"
    );

    script.gate.open();
    action.fin().unwrap();
    let ran: Vec<Event> = script
        .events()
        .into_iter()
        .filter(|event| matches!(event, Event::End(..)))
        .collect();
    assert_eq!(
        ran,
        [
            Event::End("block", addrs(&[1])),
            Event::End("block", addrs(&[2, 3])),
            Event::End("release", addrs(&[2, 3, 4, 5])),
        ]
    );
    assert_eq!(counters.waiting(), 0);
}

#[test]
fn a_stop_gives_up_on_a_hung_action_after_its_bound() {
    const STOP_WAIT: Duration = Duration::from_millis(200);
    let script = Arc::new(Script {
        held: addrs(&[1]),
        ..Script::default()
    });
    let mut action = detached(
        &script,
        Shape {
            stop_wait: STOP_WAIT,
            ..shape(1, 8)
        },
    );
    let counters = action.counters();
    started(&mut action, &[]);
    block(&mut action, &[1]);
    block(&mut action, &[2]);
    release(&mut action, &[1]);
    script.wait_for("the worker hung", &Event::Start("block", addrs(&[1])));

    let stopping = Instant::now();
    action.fin().unwrap();
    let took = stopping.elapsed();
    assert!(took >= STOP_WAIT, "gave up after {took:?}");
    assert!(took < PATIENCE, "waited {took:?} for a hung action");
    assert_eq!(counters.abandoned(), 2, "the waiting block and release");
    assert!(counters.to_string().ends_with(", 2 abandoned at stop"));

    // Let the worker go; it takes nothing more.
    script.gate.open();
    script.wait_for("the hung block to end", &Event::End("block", addrs(&[1])));
    script.wait_for("the worker to finish its instance", &Event::Fin);
    assert_eq!(script.position(&Event::Start("block", addrs(&[2]))), None);
}

#[test]
fn a_stop_drains_what_is_queued() {
    let script = Arc::new(Script::default());
    let mut action = detached(&script, shape(2, 64));
    started(&mut action, &[]);
    let lasts: Vec<u8> = (1..=10).collect();
    block(&mut action, &lasts);
    release(&mut action, &lasts[..5]);
    action.fin().unwrap();
    let events = script.events();
    for last in &lasts {
        assert!(
            events.contains(&Event::End("block", addrs(&[*last]))),
            "{events:?}"
        );
    }
    assert!(events.contains(&Event::End("release", addrs(&lasts[..5]))));
    assert_eq!(events.iter().filter(|e| **e == Event::Fin).count(), 2);
}

#[test]
fn an_init_error_in_time_is_returned_and_the_action_runs_nothing() {
    let script = Arc::new(Script {
        refuse_init: true,
        ..Script::default()
    });
    let mut action = detached(&script, shape(1, 8));
    let counters = action.counters();
    let due = records(&[1]);
    let error = action.init(&refs(&due), SystemTime::now()).unwrap_err();
    assert_eq!(error.to_string(), "fake: cannot start");
    block(&mut action, &[2]);
    assert_eq!(counters.failed(), 1);
    drop(action);
    assert!(!script
        .events()
        .iter()
        .any(|e| matches!(e, Event::Start(..))));
}

#[test]
fn a_slow_restore_goes_on_in_the_background_ahead_of_new_blocks() {
    let script = Arc::new(Script {
        slow_init: true,
        ..Script::default()
    });
    let mut action = detached(
        &script,
        Shape {
            init_wait: Duration::from_millis(20),
            ..shape(1, 8)
        },
    );
    started(&mut action, &[7]);
    block(&mut action, &[1]);
    assert!(script.events().is_empty(), "{:?}", script.events());
    script.gate.open();
    action.fin().unwrap();
    assert_eq!(
        script.events(),
        [
            Event::Init(addrs(&[7])),
            Event::Start("block", addrs(&[1])),
            Event::End("block", addrs(&[1])),
            Event::Fin,
        ]
    );
}

#[test]
fn a_late_init_error_makes_later_blocks_count_as_failed() {
    let script = Arc::new(Script {
        slow_init: true,
        refuse_init: true,
        ..Script::default()
    });
    let mut action = detached(
        &script,
        Shape {
            init_wait: Duration::from_millis(20),
            ..shape(1, 8)
        },
    );
    let counters = action.counters();
    started(&mut action, &[]);
    block(&mut action, &[1, 2]);
    script.gate.open();
    action.fin().unwrap();
    block(&mut action, &[3]);
    assert_eq!(counters.failed(), 3, "two discarded, one refused");
    assert!(!script
        .events()
        .iter()
        .any(|e| matches!(e, Event::Start(..))));
}

#[test]
fn failures_are_counted_per_address() {
    let script = Arc::new(Script {
        refuse: addrs(&[2]),
        ..Script::default()
    });
    let mut action = detached(&script, shape(1, 8));
    let counters = action.counters();
    started(&mut action, &[]);
    block(&mut action, &[1, 2, 3]);
    action.fin().unwrap();
    assert_eq!(counters.failed(), 1);
    assert_eq!(counters.queued(), 3);
}

#[test]
fn the_wrapper_speaks_for_the_action_and_says_how_it_runs() {
    let script = Arc::new(Script::default());
    let action = detached(&script, shape(4, 32));
    assert_eq!(action.name(), "fake");
    assert_eq!(action.check(), ["fake problem"]);
    assert!(action.runs_programs());
    let lines = action.describe();
    assert_eq!(lines[0], "block: nothing");
    assert_eq!(
        lines[1],
        "runs off the responder thread, on 4 worker threads of its own: at most 32 addresses \
         wait, further blocks are dropped for this action and counted"
    );
    assert_eq!(action.detached().map(|c| c.action()), Some("fake"));
    assert!(script.events().is_empty(), "nothing runs before init");
}

#[test]
fn the_status_suffix_lists_every_detached_action() {
    let script = Arc::new(Script::default());
    let action = detached(&script, shape(1, 8));
    assert_eq!(StatusSuffix(Vec::new()).to_string(), "");
    assert_eq!(
        StatusSuffix(vec![action.counters()]).to_string(),
        "; fake: 0 blocks queued, 0 waiting, 0 dropped (queue full), 0 failed"
    );
}
