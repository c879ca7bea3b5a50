//! The users file: one `username password` per line; blank lines and lines starting with
//! `#` are skipped. Every problem is reported with its line number and the fix.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// Longest username accepted (bytes).
pub const MAX_USERNAME: usize = 64;

/// The accounts: username → password.
pub type Users = HashMap<String, String>;

/// Why the users file cannot be used.
#[derive(Debug)]
pub enum UsersError {
    /// The file cannot be read.
    Read(String, std::io::Error),
    /// A line is not `username password`.
    BadLine {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// No account at all.
    Empty(String),
}

impl fmt::Display for UsersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsersError::Read(path, e) => write!(
                f,
                "cannot read the users file {path} (--users): {e}; create it with one `username password` per line, readable by this user"
            ),
            UsersError::BadLine { path, line, why } => write!(
                f,
                "users file {path} (--users), line {line}: {why}; each line must be `username password` (blank lines and lines starting with # are skipped)"
            ),
            UsersError::Empty(path) => write!(
                f,
                "the users file {path} (--users) has no accounts; add one `username password` per line"
            ),
        }
    }
}

impl std::error::Error for UsersError {}

/// Reads and checks the users file at `path`.
pub fn load(path: &Path) -> Result<Users, UsersError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| UsersError::Read(shown.clone(), e))?;
    parse(&text, &shown)
}

/// Parses the users file's `text` (`path` names it in errors).
pub fn parse(text: &str, path: &str) -> Result<Users, UsersError> {
    let mut users = Users::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: String| UsersError::BadLine {
            path: path.to_owned(),
            line: index + 1,
            why,
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let [user, password] = words[..] else {
            return Err(bad(format!(
                "expected 2 words, found {} in {line:?}",
                words.len()
            )));
        };
        if user.len() > MAX_USERNAME {
            return Err(bad(format!(
                "username {user:?} is longer than {MAX_USERNAME} bytes"
            )));
        }
        if !user
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(bad(format!(
                "username {user:?} may hold only letters, digits, '_', '-' and '.'"
            )));
        }
        if users.insert(user.to_owned(), password.to_owned()).is_some() {
            return Err(bad(format!("username {user:?} appears twice")));
        }
    }
    if users.is_empty() {
        return Err(UsersError::Empty(path.to_owned()));
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_skipping_blanks_and_comments() {
        let users = parse("# accounts\nalice pw1\n\n  bob   pw2  \n", "u").unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users["bob"], "pw2");
    }

    #[test]
    fn bad_lines_name_their_number() {
        let e = parse("alice pw\nbob\n", "u").unwrap_err().to_string();
        assert!(
            e.contains("line 2") && e.contains("expected 2 words"),
            "{e}"
        );
        let e = parse("alice pw\nalice again\n", "u")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("twice"), "{e}");
        let e = parse("al/ice pw\n", "u").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        let e = parse("\n# none\n", "u").unwrap_err().to_string();
        assert!(e.contains("no accounts"), "{e}");
    }
}
