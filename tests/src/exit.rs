//! Runs of the native binary that are meant to end by themselves (a refused start, `--help`),
//! bounded so a binary that serves instead does not hang the test.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::native_binary;

/// How long a run may take before it counts as serving and is killed: far beyond any
/// refusal, even on a loaded machine.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// How a run ended and what it wrote.
#[derive(Debug)]
pub struct Exited {
    /// The exit status code; -1 when it was killed (it ran past its timeout, i.e. it was
    /// serving) or ended by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The native binary with `args`, logging at `info` as the servers under test do, with
/// nothing on stdin.
pub fn native_command(args: &[&str]) -> Command {
    let mut command = Command::new(native_binary());
    command
        .args(args)
        .env("RUST_LOG", "token_server=info")
        .stdin(Stdio::null());
    command
}

/// Runs the native binary with `args` to its exit, within [`RUN_TIMEOUT`].
pub fn run_native(args: &[&str]) -> Exited {
    run_to_exit(&mut native_command(args), RUN_TIMEOUT)
}

/// Runs `command` to its exit, or kills it after `timeout` (then the code is -1): a server
/// that should have refused to start must not hang the test. Its stdout and stderr are
/// read as it runs, so a full pipe cannot stall it.
pub fn run_to_exit(command: &mut Command, timeout: Duration) -> Exited {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run token-server");
    let stdout = read_on_a_thread(child.stdout.take());
    let stderr = read_on_a_thread(child.stderr.take());
    let code = wait_or_kill(&mut child, timeout);
    let text = |reader: std::thread::JoinHandle<String>| reader.join().unwrap_or_default();
    Exited {
        code,
        stdout: text(stdout),
        stderr: text(stderr),
    }
}

fn read_on_a_thread(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The exit code of `child`, or -1 once it is killed after `timeout`.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> i32 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for token-server") {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return -1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
