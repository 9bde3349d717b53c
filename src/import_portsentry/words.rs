//! Splits a PortSentry command string into argv words as /bin/sh would for a plain command
//! (blanks, single and double quotes, backslashes), and refuses anything that needs a shell to
//! mean what it says: pipes, lists, redirections, substitutions, variables and patterns. It runs
//! nothing and knows no program.
//!
//! PortSentry pasted `$TARGET$`, `$PORT$` and `$MODE$` into the string and handed it to
//! `/bin/sh -c`; nfsentry fills them in inside each argument and runs the argv directly, so for
//! the strings accepted here both mean the same command.

/// The placeholders PortSentry filled in, which nfsentry fills in as well.
pub(super) const PLACEHOLDERS: [&str; 3] = ["$TARGET$", "$PORT$", "$MODE$"];

/// What in the string needs a shell, worded to follow "it uses ...".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ShellSyntax(pub(super) &'static str);

/// The argv words of `text`, or the first piece of shell syntax in it.
pub(super) fn split(text: &str) -> Result<Vec<String>, ShellSyntax> {
    let mut words = Vec::new();
    // None until a character (or an empty pair of quotes) starts a word.
    let mut word: Option<String> = None;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let after = &rest[c.len_utf8()..];
        match c {
            ' ' | '\t' => {
                words.extend(word.take());
                rest = after;
            }
            '\'' => {
                let (inside, tail) = after
                    .split_once('\'')
                    .ok_or(ShellSyntax("an unterminated single quote"))?;
                word.get_or_insert_with(String::new).push_str(inside);
                rest = tail;
            }
            '"' => {
                let (inside, tail) = double_quoted(after)?;
                word.get_or_insert_with(String::new).push_str(&inside);
                rest = tail;
            }
            '\\' => {
                let escaped = after
                    .chars()
                    .next()
                    .ok_or(ShellSyntax("a backslash at the end"))?;
                word.get_or_insert_with(String::new).push(escaped);
                rest = &after[escaped.len_utf8()..];
            }
            '$' => {
                let placeholder = placeholder_at(rest).ok_or(ShellSyntax(
                    "a $ expansion (a variable, parameter or command substitution)",
                ))?;
                word.get_or_insert_with(String::new).push_str(placeholder);
                rest = &rest[placeholder.len()..];
            }
            '=' if words.is_empty() && word.as_deref().is_some_and(is_shell_name) => {
                return Err(ShellSyntax(
                    "an environment assignment (NAME=value before the command)",
                ));
            }
            '#' | '~' if word.is_none() => {
                return Err(ShellSyntax(if c == '#' {
                    "a # comment"
                } else {
                    "a ~ home directory"
                }));
            }
            _ => {
                if let Some(what) = operator(c) {
                    return Err(ShellSyntax(what));
                }
                word.get_or_insert_with(String::new).push(c);
                rest = after;
            }
        }
    }
    words.extend(word);
    Ok(words)
}

/// Characters that mean something to the shell wherever they stand unquoted.
fn operator(c: char) -> Option<&'static str> {
    Some(match c {
        '|' => "a pipe (|)",
        '&' => "& (a background job or &&)",
        ';' => "a command list (;)",
        '<' | '>' => "a redirection (< or >)",
        '(' | ')' => "parentheses (a subshell)",
        '`' => "a command substitution (`...`)",
        '*' | '?' | '[' | ']' => "a filename pattern (*, ? or [...])",
        '{' | '}' => "braces, which some shells expand",
        '\n' | '\r' => "a line break",
        _ => return None,
    })
}

/// The inside of a double-quoted string and what follows its closing quote. Within double
/// quotes the shell still expands `$` and backquotes; only the placeholders are allowed.
fn double_quoted(text: &str) -> Result<(String, &str), ShellSyntax> {
    let mut inside = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let after = &rest[c.len_utf8()..];
        match c {
            '"' => return Ok((inside, after)),
            '\\' => match after.chars().next() {
                Some(escaped @ ('$' | '`' | '"' | '\\')) => {
                    inside.push(escaped);
                    rest = &after[1..];
                }
                // Before any other character the backslash is itself.
                _ => {
                    inside.push('\\');
                    rest = after;
                }
            },
            '$' => {
                let placeholder = placeholder_at(rest).ok_or(ShellSyntax(
                    "a $ expansion (a variable, parameter or command substitution)",
                ))?;
                inside.push_str(placeholder);
                rest = &rest[placeholder.len()..];
            }
            '`' => return Err(ShellSyntax("a command substitution (`...`)")),
            _ => {
                inside.push(c);
                rest = after;
            }
        }
    }
    Err(ShellSyntax("an unterminated double quote"))
}

fn placeholder_at(text: &str) -> Option<&'static str> {
    PLACEHOLDERS
        .iter()
        .copied()
        .find(|placeholder| text.starts_with(placeholder))
}

/// A shell variable name, as in `NAME=value command`.
fn is_shell_name(word: &str) -> bool {
    let mut characters = word.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && characters.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Result<Vec<String>, ShellSyntax> {
        split(text)
    }

    fn owned(words: &[&str]) -> Vec<String> {
        words.iter().map(|word| (*word).to_owned()).collect()
    }

    #[test]
    fn plain_commands_split_as_the_shell_splits_them() {
        let cases: [(&str, &[&str]); 9] = [
            (
                "/some/path/here/script $TARGET$ $PORT$",
                &["/some/path/here/script", "$TARGET$", "$PORT$"],
            ),
            (
                "  /usr/bin/logger   -t portsentry\tblocked $TARGET$  ",
                &["/usr/bin/logger", "-t", "portsentry", "blocked", "$TARGET$"],
            ),
            (
                "/usr/bin/logger 'scan from $TARGET$ on port $PORT$'",
                &["/usr/bin/logger", "scan from $TARGET$ on port $PORT$"],
            ),
            (
                "/bin/echo \"$MODE$ scan\" from\\ $TARGET$",
                &["/bin/echo", "$MODE$ scan", "from $TARGET$"],
            ),
            (
                "/sbin/ipfw add 1 deny all from $TARGET$:255.255.255.255 to any",
                &[
                    "/sbin/ipfw",
                    "add",
                    "1",
                    "deny",
                    "all",
                    "from",
                    "$TARGET$:255.255.255.255",
                    "to",
                    "any",
                ],
            ),
            ("/bin/true ''", &["/bin/true", ""]),
            ("/bin/echo a=b", &["/bin/echo", "a=b"]),
            (
                "/bin/echo \"\\$TARGET\\$ \\\\ \\n\"",
                &["/bin/echo", "$TARGET$ \\ \\n"],
            ),
            ("", &[]),
        ];
        for (text, expected) in cases {
            assert_eq!(words(text), Ok(owned(expected)), "{text:?}");
        }
    }

    #[test]
    fn anything_that_needs_a_shell_is_refused_with_what_it_is() {
        let cases = [
            ("/bin/echo 'block in' | /sbin/ipf -f -", "a pipe (|)"),
            ("/bin/mail root < /tmp/x", "a redirection (< or >)"),
            ("/bin/a $TARGET$ >> /var/log/x", "a redirection (< or >)"),
            ("/bin/a; /bin/b", "a command list (;)"),
            ("/bin/a && /bin/b", "& (a background job or &&)"),
            ("/bin/a $TARGET$ &", "& (a background job or &&)"),
            (
                "/bin/echo $HOME",
                "a $ expansion (a variable, parameter or command substitution)",
            ),
            (
                "/bin/echo \"$(id)\"",
                "a $ expansion (a variable, parameter or command substitution)",
            ),
            ("/bin/echo `id`", "a command substitution (`...`)"),
            ("/bin/echo \"`id`\"", "a command substitution (`...`)"),
            ("/bin/rm /tmp/*.log", "a filename pattern (*, ? or [...])"),
            ("~/bin/alert $TARGET$", "a ~ home directory"),
            ("/bin/alert $TARGET$ # page me", "a # comment"),
            (
                "PATH=/x alert $TARGET$",
                "an environment assignment (NAME=value before the command)",
            ),
            ("/bin/echo 'unterminated", "an unterminated single quote"),
            ("/bin/echo \"unterminated", "an unterminated double quote"),
            ("/bin/echo trailing\\", "a backslash at the end"),
            ("(/bin/alert)", "parentheses (a subshell)"),
            ("/bin/echo {a,b}", "braces, which some shells expand"),
        ];
        for (text, what) in cases {
            assert_eq!(words(text), Err(ShellSyntax(what)), "{text:?}");
        }
    }
}
