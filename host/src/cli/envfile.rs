//! Editing `.env` in place for `clawbox setup`: a variable's assignment is replaced where it
//! is, or added under its commented template line (`# OPENAI_BASE_URL=…`, as `.env.example`
//! has them), or at the end; every other line (comments, blank lines, variables clawbox does
//! not know) stays byte for byte. Before anything is written, the result is parsed back with
//! dotenvy, the parser the commands use, and must give every variable its old value except
//! those set — so an edit can never silently change something else. Writes go to a temporary
//! file of mode 0600 renamed over the old one: the file is never half-written or readable by
//! other users, even for a moment.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why `.env` could not be read or edited.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    /// The file does not parse; the user has to fix it by hand (nothing was written).
    #[error("{}: {source} (fix that line by hand; nothing was written)", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: dotenvy::Error,
    },
    /// A value cannot be written so that it reads back the same (a line break in it).
    #[error("{key}: {problem}")]
    Value { key: String, problem: String },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A `.env` file as lines.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvFile {
    path: PathBuf,
    lines: Vec<String>,
    /// Whether the text ended with a line break (kept as it was).
    trailing_newline: bool,
    /// Values as dotenvy reads them (the first assignment of a name wins).
    values: BTreeMap<String, String>,
}

impl EnvFile {
    /// Reads `path`; a missing file is an empty one.
    pub fn read(path: &Path) -> Result<EnvFile, EnvFileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(EnvFileError::Io {
                    action: "read",
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<EnvFile, EnvFileError> {
        let values = parse_values(text).map_err(|source| EnvFileError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(EnvFile {
            path: path.to_path_buf(),
            lines: text.lines().map(str::to_owned).collect(),
            trailing_newline: text.is_empty() || text.ends_with('\n'),
            values,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value the commands would read from this file for `key` (empty counts as unset,
    /// as in the configuration).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// Sets `key` to `value` (an empty value unsets it for the commands). Each assignment of
    /// `key` is rewritten in place; with none, the line goes under its commented template
    /// line, or at the end.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), EnvFileError> {
        let line = format!("{key}={}", quote(key, value)?);
        let mut replaced = false;
        for l in &mut self.lines {
            if assigns(l, key) {
                l.clone_from(&line);
                replaced = true;
            }
        }
        if !replaced {
            match self.lines.iter().position(|l| is_template_of(l, key)) {
                Some(i) => self.lines.insert(i + 1, line),
                None => self.lines.push(line),
            }
        }
        let text = self.render();
        let mut want = self.values.clone();
        want.insert(key.to_owned(), value.to_owned());
        // The edit must read back as exactly the old values plus this one.
        match parse_values(&text) {
            Ok(got) if got == want => {
                self.values = got;
                Ok(())
            }
            Ok(_) | Err(_) => Err(EnvFileError::Value {
                key: key.to_owned(),
                problem: "the edited file would not read back the same; edit it by hand".into(),
            }),
        }
    }

    pub fn render(&self) -> String {
        let mut text = self.lines.join("\n");
        if self.trailing_newline || !self.lines.is_empty() {
            text.push('\n');
        }
        text
    }

    /// Writes the file with mode 0600 (through a renamed temporary file), creating its
    /// directory (mode 0700) if needed. A symlinked `.env` is written where it points.
    pub fn write(&self) -> Result<(), EnvFileError> {
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| EnvFileError::Io {
                action,
                path,
                source,
            }
        };
        let target = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        let dir = target
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io("create", &dir))?;
        }
        let tmp = dir.join(format!(".env.clawbox-setup-{}", std::process::id()));
        let result = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("create", &tmp))?;
            file.write_all(self.render().as_bytes())
                .map_err(io("write", &tmp))?;
            file.sync_all().map_err(io("write", &tmp))?;
            std::fs::rename(&tmp, &target).map_err(io("replace", &target))
        })();
        if result.is_err() {
            // Best effort: the temporary file is ours and useless now.
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

fn parse_values(text: &str) -> Result<BTreeMap<String, String>, dotenvy::Error> {
    let mut values = BTreeMap::new();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        let (k, v) = item?;
        // dotenvy never overrides a variable that is set, so the first assignment wins.
        values.entry(k).or_insert(v);
    }
    Ok(values)
}

/// Whether `line` assigns `key` (`KEY=…`, `export KEY=…`, spaces around `=` allowed).
fn assigns(line: &str, key: &str) -> bool {
    let l = line.trim_start();
    let l = l.strip_prefix("export ").map_or(l, str::trim_start);
    l.strip_prefix(key)
        .is_some_and(|rest| rest.trim_start().starts_with('='))
}

/// Whether `line` is a commented-out assignment of `key` (`# KEY=default`).
fn is_template_of(line: &str, key: &str) -> bool {
    line.trim_start()
        .strip_prefix('#')
        .is_some_and(|rest| assigns(rest, key))
}

/// `value` as dotenvy reads it back: bare when it is plain, single-quoted otherwise (no
/// escapes, no `$` substitution inside), double-quoted with escapes when it holds a `'`.
fn quote(key: &str, value: &str) -> Result<String, EnvFileError> {
    if value.contains(['\n', '\r']) {
        return Err(EnvFileError::Value {
            key: key.to_owned(),
            problem: "a value cannot span lines".into(),
        });
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:@+".contains(c);
    Ok(if value.chars().all(plain) {
        value.to_owned()
    } else if !value.contains('\'') {
        format!("'{value}'")
    } else {
        let mut out = String::from("\"");
        for c in value.chars() {
            if matches!(c, '"' | '\\' | '$') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pretty_assertions::assert_eq;

    fn edit(text: &str, sets: &[(&str, &str)]) -> String {
        let mut env = EnvFile::parse(Path::new(".env"), text).unwrap();
        for (k, v) in sets {
            env.set(k, v).unwrap();
        }
        env.render()
    }

    #[test]
    fn edits_in_place_and_keeps_everything_else() {
        let text = "# my notes\n\
                    OPENAI_BASE_URL=http://old/v1   # comment kept? no: the line is replaced\n\
                    \n\
                    MY_OWN_THING=keep_me\n\
                    # DEFAULT_MODEL=gpt-4o                # template line\n\
                    export TELEGRAM_BOT_TOKEN=1:old\n";
        let got = edit(
            text,
            &[
                ("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1"),
                ("DEFAULT_MODEL", "llama3:8b"),
                ("TELEGRAM_BOT_TOKEN", "123:new"),
                ("OPENAI_API_KEY", "sk-abc"),
            ],
        );
        assert_eq!(
            got,
            "# my notes\n\
             OPENAI_BASE_URL=http://127.0.0.1:8080/v1\n\
             \n\
             MY_OWN_THING=keep_me\n\
             # DEFAULT_MODEL=gpt-4o                # template line\n\
             DEFAULT_MODEL=llama3:8b\n\
             TELEGRAM_BOT_TOKEN=123:new\n\
             OPENAI_API_KEY=sk-abc\n"
        );
        // A file without a final line break keeps none of its lines changed.
        assert_eq!(edit("A=1", &[("B", "2")]), "A=1\nB=2\n");
        assert_eq!(edit("", &[("B", "2")]), "B=2\n");
        // A longer name with the same start is another variable.
        assert_eq!(
            edit("OPENAI_API_KEY_OLD=x\n", &[("OPENAI_API_KEY", "y")]),
            "OPENAI_API_KEY_OLD=x\nOPENAI_API_KEY=y\n"
        );
    }

    #[test]
    fn values_read_back_as_written() {
        for value in [
            "plain",
            "",
            "with space",
            "a#hash",
            "it's",
            "both ' and \"",
            "$HOME and ${X}",
            "back\\slash",
        ] {
            let text = edit("X=1\n", &[("KEY", value)]);
            let values = parse_values(&text).unwrap();
            assert_eq!(values.get("KEY").map(String::as_str), Some(value), "{text}");
            assert_eq!(values.get("X").map(String::as_str), Some("1"));
        }
        let mut env = EnvFile::parse(Path::new(".env"), "").unwrap();
        assert!(matches!(
            env.set("KEY", "two\nlines"),
            Err(EnvFileError::Value { .. })
        ));
    }

    #[test]
    fn an_unparsable_file_is_refused() {
        assert!(matches!(
            EnvFile::parse(Path::new(".env"), "GOOD=1\nBAD LINE\n"),
            Err(EnvFileError::Parse { .. })
        ));
    }

    #[test]
    fn the_file_is_private_and_replaced_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home/.env");
        let mut env = EnvFile::read(&path).unwrap();
        assert_eq!(env.get("A"), None);
        env.set("A", "1").unwrap();
        env.write().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        // An existing file readable by others becomes private when rewritten.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut env = EnvFile::read(&path).unwrap();
        assert_eq!(env.get("A"), Some("1"));
        env.set("B", "2").unwrap();
        env.write().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "A=1\nB=2\n");
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(".env")]);
    }
}
