//! The `alert-only` action, what `actions = []` means: detections are logged and their packets
//! dropped inline, and nothing else shuts the source out. It exists so that the responder never
//! has to special-case an empty list of actions.

use std::time::SystemTime;

use super::{Action, ActionError};
use crate::store::BlockRecord;

pub struct AlertOnlyAction;

impl Action for AlertOnlyAction {
    fn name(&self) -> &'static str {
        "alert-only"
    }

    fn check(&self) -> Vec<String> {
        Vec::new()
    }

    fn describe(&self) -> Vec<String> {
        vec![
            "no blocking action is configured (actions = []): detections are logged and \
              their packets dropped inline, nothing is blocked"
                .to_owned(),
        ]
    }

    fn init(&mut self, _due: &[&BlockRecord], _now: SystemTime) -> Result<(), ActionError> {
        Ok(())
    }

    fn block(&mut self, _blocks: &[&BlockRecord], _now: SystemTime) -> Result<(), ActionError> {
        Ok(())
    }

    fn release(&mut self, _blocks: &[&BlockRecord]) -> Result<(), ActionError> {
        Ok(())
    }
}
