//! Notes: what the annotator says about a byte range that breaks a rule.
//!
//! A note never stops decoding. It carries a severity, a stable machine code
//! (safe to grep for in CI logs), the RFC 6455 section the rule comes from and a
//! sentence a firmware developer can act on. What to do about it (close with
//! 1002? keep going?) is the caller's policy.

use std::fmt;

/// How bad a note is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth knowing; not a violation (hints about a likely firmware bug).
    Info,
    /// Legal but suspicious or wasteful.
    Warning,
    /// Breaks a MUST of RFC 6455 or of the Kinetid contract.
    Error,
}

impl Severity {
    /// Lower-case name used in JSON and text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding attached to a frame, a message, a handshake or a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// How bad it is.
    pub severity: Severity,
    /// Stable identifier, kebab-case (for example `client-frame-unmasked`).
    pub code: &'static str,
    /// Where the rule comes from, for example `RFC 6455 5.2` or `kinetid v1`.
    pub rfc: &'static str,
    /// A sentence saying what is wrong and, where we can tell, why.
    pub message: String,
}

impl Note {
    /// An error-severity note.
    pub fn error(code: &'static str, rfc: &'static str, message: impl Into<String>) -> Self {
        Note {
            severity: Severity::Error,
            code,
            rfc,
            message: message.into(),
        }
    }
    /// A warning-severity note.
    pub fn warning(code: &'static str, rfc: &'static str, message: impl Into<String>) -> Self {
        Note {
            severity: Severity::Warning,
            code,
            rfc,
            message: message.into(),
        }
    }
    /// An info-severity note (hints).
    pub fn info(code: &'static str, rfc: &'static str, message: impl Into<String>) -> Self {
        Note {
            severity: Severity::Info,
            code,
            rfc,
            message: message.into(),
        }
    }
}

/// The worst severity in a list of notes, if any.
pub fn worst(notes: &[Note]) -> Option<Severity> {
    notes.iter().map(|n| n.severity).max()
}

/// Notes that `listen` raises about a connection from what it knows beyond
/// the connection's bytes (the device registry, memory, timers), with the
/// rule each comes from. Captures record them, so a replay shows them too.
pub const LISTENER_NOTES: &[(&str, &str)] = &[
    ("device-id-duplicate", "kinetid v1"),
    ("device-replaced", "kinetid v1"),
    ("device-registry-full", "kinetid v1"),
    ("memory-budget-exceeded", "RFC 6455 10.4"),
    ("frame-timeout", "RFC 6455 10.4"),
    ("write-timeout", "RFC 6455 10.4"),
];

/// A listener note from its recorded code, severity and message; `None`
/// for a code this version does not know.
pub fn listener_note(severity: &str, code: &str, message: &str) -> Option<Note> {
    let &(code, rfc) = LISTENER_NOTES.iter().find(|(c, _)| *c == code)?;
    let severity = match severity {
        "error" => Severity::Error,
        "warning" => Severity::Warning,
        "info" => Severity::Info,
        _ => return None,
    };
    Some(Note {
        severity,
        code,
        rfc,
        message: message.to_string(),
    })
}

/// A listener note by code (which must be in [`LISTENER_NOTES`]).
pub fn listener(severity: Severity, code: &'static str, message: impl Into<String>) -> Note {
    let rfc = LISTENER_NOTES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("kinetid v1", |(_, r)| r);
    Note {
        severity,
        code,
        rfc,
        message: message.into(),
    }
}
