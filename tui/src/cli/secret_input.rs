//! Reading a secret (a credential value, a recovery key) from a masked prompt on the
//! terminal, or from stdin when it is not a terminal — never from the command line, where
//! it would land in shell history and `ps`.

use crate::client::CliError;
use agenfleet_protocol::SecretValue;
use std::io::{IsTerminal, Read, Write};
use zeroize::Zeroizing;

/// Reads one secret. On a terminal: prompts on stderr with echo off.
pub fn read_secret(prompt: &str) -> Result<SecretValue, CliError> {
    let stdin = std::io::stdin();
    let mut buf = Zeroizing::new(Vec::new());
    if stdin.is_terminal() {
        eprint!("{prompt}: ");
        let _ = std::io::stderr().flush();
        let fd = libc::STDIN_FILENO;
        // SAFETY: termios calls on our own stdin with a zeroed struct they fill in.
        let mut old: libc::termios = unsafe { std::mem::zeroed() };
        let have = unsafe { libc::tcgetattr(fd, &mut old) } == 0;
        if have {
            let mut quiet = old;
            quiet.c_lflag &= !libc::ECHO;
            quiet.c_lflag |= libc::ECHONL;
            unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
        }
        let mut line = Zeroizing::new(String::new());
        let r = stdin.read_line(&mut line);
        if have {
            unsafe { libc::tcsetattr(fd, libc::TCSANOW, &old) };
        }
        r.map_err(|e| {
            CliError::new(
                6,
                "invalid_argument",
                format!("cannot read the secret: {e}"),
            )
        })?;
        buf.extend_from_slice(line.trim_end_matches(['\n', '\r']).as_bytes());
    } else {
        stdin.lock().read_to_end(&mut buf).map_err(|e| {
            CliError::new(
                6,
                "invalid_argument",
                format!("cannot read the secret from stdin: {e}"),
            )
        })?;
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
    }
    if buf.is_empty() {
        return Err(CliError::new(
            6,
            "invalid_argument",
            "empty secret: nothing was read",
        ));
    }
    Ok(SecretValue::new(buf.to_vec()))
}
