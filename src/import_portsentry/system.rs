//! The machine as `nfsentry import-portsentry` sees it: files read from disk and programs found
//! on PATH. This is the import's only contact with the system, and it only ever reads.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{import, Import, Note, NoteKind, Surroundings};
use crate::config::{self, ConfigError};

/// Used when the environment has no PATH, as for nfsentry's firewall tools.
const FALLBACK_SEARCH_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The real file system and PATH.
pub struct System;

impl Surroundings for System {
    /// Only a regular file, and no more of it than the config's own reader takes: a FIFO
    /// or a device named as IGNORE_FILE must not hang or swamp the import.
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        let bytes = config::read_regular(path, config::TEXT_FILE_MAX_BYTES)
            .map_err(config::FileProblem::into_io)?;
        String::from_utf8(bytes).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
    }

    /// The first executable file named `program` in an absolute PATH entry, searched as the
    /// firewall actions and `check-config` search it, so that what the import finds, the check
    /// finds too.
    fn find_program(&self, program: &str) -> Option<PathBuf> {
        let search = env::var_os("PATH").unwrap_or_else(|| OsString::from(FALLBACK_SEARCH_PATH));
        env::split_paths(&search)
            .filter(|directory| directory.is_absolute())
            .map(|directory| directory.join(program))
            .find(|candidate| self.is_executable(candidate))
    }

    fn is_executable(&self, path: &Path) -> bool {
        fs::metadata(path)
            .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
    }
}

/// Reads and imports the portsentry.conf at `path`. PortSentry read bytes, and old files carry
/// comments in Latin-1: a line that is not UTF-8 is read with replacement characters and noted.
pub fn import_file(path: &Path) -> Result<Import, ConfigError> {
    let bytes = config::read_regular(path, config::TEXT_FILE_MAX_BYTES)
        .map_err(|problem| ConfigError::from_file_problem(path, problem))?;
    let text = String::from_utf8_lossy(&bytes);
    let name = path.display().to_string();
    let mut imported = import(&text, &name, &System);
    if let std::borrow::Cow::Owned(_) = text {
        let mut lines = Vec::new();
        for (index, line) in bytes.split(|byte| *byte == b'\n').enumerate() {
            if std::str::from_utf8(line).is_err() {
                lines.push(Note {
                    file: None,
                    line: Some(index + 1),
                    key: String::new(),
                    kind: NoteKind::MappedInPart,
                    reason: "not UTF-8 text; read with replacement characters".to_owned(),
                });
            }
        }
        lines.append(&mut imported.notes);
        imported.notes = lines;
    }
    Ok(imported)
}
