//! Secrets given to the CLI without putting them on the command line, where
//! `ps` and the shell's history would show them: from a file
//! (`--webhook-secret-file PATH`), from standard input (`-` as the value or
//! as the path), or from the environment where a flag declares one.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};

/// Where one secret comes from: its flag's value (`-` = standard input) and
/// its `…-file` flag's path (`-` = standard input). Clap keeps the two
/// apart (`conflicts_with`).
#[derive(Debug, Clone, Copy)]
pub struct SecretSource<'a> {
    /// The flag, for messages (`--webhook-secret`).
    pub flag: &'static str,
    pub value: Option<&'a str>,
    pub file: Option<&'a Path>,
}

/// Reads secrets from their sources; standard input can be read once.
#[derive(Debug, Default)]
pub struct SecretReader {
    stdin_taken_by: Option<&'static str>,
}

impl SecretReader {
    /// The secret, with one trailing newline (`\n` or `\r\n`) removed;
    /// `None` when neither flag was given. An empty secret is an error.
    pub fn read(&mut self, source: SecretSource<'_>) -> anyhow::Result<Option<String>> {
        let flag = source.flag;
        let text = match (source.value, source.file) {
            (None, None) => return Ok(None),
            (Some("-"), _) => self.stdin(flag)?,
            (_, Some(path)) if path == Path::new("-") => self.stdin(flag)?,
            (_, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("reading {flag}-file {}", path.display()))?,
            (Some(value), None) => value.to_owned(),
        };
        let text = trim_one_newline(text);
        if text.is_empty() {
            bail!("{flag}: the secret is empty");
        }
        Ok(Some(text))
    }

    fn stdin(&mut self, flag: &'static str) -> anyhow::Result<String> {
        if let Some(first) = self.stdin_taken_by.replace(flag) {
            bail!("{flag} and {first} cannot both be read from standard input: use a file for one");
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .with_context(|| format!("reading {flag} from standard input"))?;
        Ok(text)
    }
}

/// `text` without one final `\n` or `\r\n` (what `echo` and editors add).
fn trim_one_newline(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_removed() {
        assert_eq!(trim_one_newline("whsec_x\n".into()), "whsec_x");
        assert_eq!(trim_one_newline("whsec_x\r\n".into()), "whsec_x");
        assert_eq!(trim_one_newline("whsec_x\n\n".into()), "whsec_x\n");
        assert_eq!(trim_one_newline("whsec_x".into()), "whsec_x");
    }

    #[test]
    fn a_secret_comes_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "whsec_from_file\n").unwrap();
        let mut reader = SecretReader::default();
        let read = reader
            .read(SecretSource {
                flag: "--webhook-secret",
                value: None,
                file: Some(&path),
            })
            .unwrap();
        assert_eq!(read.as_deref(), Some("whsec_from_file"));
        std::fs::write(&path, "\n").unwrap();
        assert!(reader
            .read(SecretSource {
                flag: "--webhook-secret",
                value: None,
                file: Some(&path),
            })
            .is_err());
    }
}
