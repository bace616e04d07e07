//! A stand-in for `kubectl exec`, for the test of the Kubernetes recipe
//! (`cluster.rs`): this test binary run with `AWW_KUBECTL_STUB` set (see
//! [`run_if_kubectl_stub`]) behaves as `kubectl exec [-i] POD -- CMD...`
//! does, as far as a launcher's worker can tell:
//!
//! - the command runs in a new process that is not the stub's exec, in a
//!   session of its own (out of reach of signals to the stub's group, as
//!   in a pod), with an environment of the pod's, not the caller's: no
//!   variable of the caller's environment reaches it;
//! - with `-i` (`--stdin`) the stub copies its stdin to the command's, as
//!   `kubectl` streams it; without, the command's stdin is empty;
//! - the stub exits with the command's status (128 + the signal for one
//!   killed), saying `command terminated with exit code N` on stderr as
//!   `kubectl` does when it is not 0;
//! - options it does not know, or no `--` before the command, are refused
//!   as usage errors (exit 1), before anything runs.
//!
//! With `AWW_NOTE` set, it also writes what it copied to that file: the
//! test's way to know the secrets it must then find nowhere.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

/// Set in the environment of the stub.
pub const KUBECTL_STUB: &str = "AWW_KUBECTL_STUB";

/// What the stub was asked for.
#[derive(Debug, PartialEq)]
struct Exec {
    stdin: bool,
    pod: String,
    command: Vec<String>,
}

/// Reads `exec [-i|--stdin] [-c C|-n NS] POD -- CMD...`.
fn parse(args: &[String]) -> Result<Exec, String> {
    let Some((verb, rest)) = args.split_first() else { return Err("no command".into()) };
    if verb != "exec" {
        return Err(format!("unknown command \"{verb}\" for \"kubectl\" (the stub has exec)"));
    }
    let (mut stdin, mut pod, mut rest) = (false, None, rest.iter());
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "-i" | "--stdin" | "-it" | "-ti" => stdin = true,
            "-t" | "--tty" => {}
            "-c" | "--container" | "-n" | "--namespace" => {
                rest.next().ok_or(format!("flag needs an argument: {arg}"))?;
            }
            "--" => break,
            flag if flag.starts_with('-') => return Err(format!("unknown flag: {flag}")),
            name if pod.is_none() => pod = Some(name.to_owned()),
            extra => return Err(format!("{extra}: the command goes after --")),
        }
    }
    let pod = pod.ok_or("a pod name is required for exec")?;
    let command: Vec<String> = rest.cloned().collect();
    if command.is_empty() {
        return Err("you must specify at least one command for the container".into());
    }
    Ok(Exec { stdin, pod, command })
}

/// When this test binary is the stub (`AWW_KUBECTL_STUB` set): runs the
/// command as `kubectl exec` would, and exits with its status.
pub fn run_if_kubectl_stub() {
    if std::env::var_os(KUBECTL_STUB).is_none() {
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exec = match parse(&args) {
        Ok(exec) => exec,
        Err(why) => {
            eprintln!("error: {why}");
            std::process::exit(1);
        }
    };
    std::process::exit(run(exec));
}

/// Runs the command of `exec` as in its pod; its status.
fn run(exec: Exec) -> i32 {
    use std::os::unix::process::CommandExt;
    let (program, args) = exec.command.split_first().expect("a command");
    let mut cmd = Command::new(program);
    // The pod's environment, never the caller's.
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOSTNAME", &exec.pod)
        .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
        .env("KUBERNETES_SERVICE_PORT", "443")
        .stdin(if exec.stdin { Stdio::piped() } else { Stdio::null() });
    // SAFETY: setsid only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("error: exec failed: {e}");
            return 126;
        }
    };
    if let Some(mut to_command) = child.stdin.take() {
        // Streamed as read, and the end passed on, as kubectl does.
        let note = std::env::var_os("AWW_NOTE").and_then(|p| std::fs::File::create(p).ok());
        std::thread::spawn(move || {
            let (mut note, mut buf) = (note, [0u8; 4096]);
            let mut from = std::io::stdin();
            while let Ok(n @ 1..) = from.read(&mut buf) {
                if let Some(note) = &mut note {
                    let _ = note.write_all(&buf[..n]);
                }
                if to_command.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    let status = child.wait().map_or(1, |s| {
        use std::os::unix::process::ExitStatusExt;
        s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
    });
    if status != 0 {
        eprintln!("command terminated with exit code {status}");
    }
    status
}

/// The stub's reading of its arguments, as `kubectl exec` reads them.
pub fn parse_cases() -> Result<(), String> {
    let s = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let ok = parse(&s(&["exec", "-i", "pod-1", "--", "env", "A=1", "prog"]))?;
    let want = Exec { stdin: true, pod: "pod-1".into(), command: s(&["env", "A=1", "prog"]) };
    if ok != want {
        return Err(format!("{ok:?}"));
    }
    let no_stdin = parse(&s(&["exec", "-n", "ns", "pod-1", "--", "prog"]))?;
    if no_stdin.stdin || no_stdin.pod != "pod-1" {
        return Err(format!("{no_stdin:?}"));
    }
    for bad in [&["exec", "-i", "--", "prog"][..], &["exec", "-i", "pod-1", "--"], &["run", "x"]] {
        if parse(&s(bad)).is_ok() {
            return Err(format!("{bad:?} was taken"));
        }
    }
    Ok(())
}
