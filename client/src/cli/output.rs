//! Output for the CLI: text or one JSON object per line, written to stdout and flushed per line (scripts read
//! it live). Errors go to stderr as one line.

use std::io::Write;

use serde_json::Value;

/// `--output text|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Writes lines to stdout, flushing each one.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub format: Format,
}

impl Out {
    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// Writes one line of text (a newline is appended).
    pub fn line(&self, s: &str) -> std::io::Result<()> {
        self.raw(s.as_bytes())
    }

    /// Writes raw bytes as one line (a newline is appended).
    pub fn raw(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut o = std::io::stdout().lock();
        o.write_all(bytes)?;
        o.write_all(b"\n")?;
        o.flush()
    }

    /// Writes one JSON object as one line.
    pub fn value(&self, v: &Value) -> std::io::Result<()> {
        self.line(&v.to_string())
    }

    /// Text or JSON, depending on the format.
    pub fn either(
        &self,
        text: impl FnOnce() -> String,
        json: impl FnOnce() -> Value,
    ) -> std::io::Result<()> {
        match self.format {
            Format::Text => self.line(&text()),
            Format::Json => self.value(&json()),
        }
    }
}
