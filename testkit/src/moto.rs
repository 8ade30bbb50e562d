//! moto's server (`pip install 'moto[server]'`; `make test` installs it): an AWS
//! emulator independent of ours, started once for this test binary and stopped
//! when the binary exits. Tests share it, so each uses its own table or secret name.

use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub struct Moto {
    pub url: String,
    /// moto runs under a small Python parent that stops it when this pipe closes,
    /// which happens when the test binary exits however it exits.
    _lifeline: Mutex<(Child, ChildStdin)>,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

/// moto's server, one request at a time. DynamoDB applies a conditional write
/// atomically; moto's threaded server checks the condition and applies the
/// update as separate steps, so two concurrent writes can both pass (two
/// `UpdateItem`s creating the same item: the second overwrites the first).
/// The tests of conditional writes under contention (claims, the trigger
/// ceiling's takes) need DynamoDB's guarantee, so requests are serialised.
const SERIALISED: &str = r#"import sys, threading
from moto import server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
lock = threading.Lock()
call = DomainDispatcherApplication.__call__
def serialised(self, environ, start_response):
    with lock:
        return call(self, environ, start_response)
DomainDispatcherApplication.__call__ = serialised
server.main(['-H', '127.0.0.1', '-p', sys.argv[1]])
"#;

/// The binary's one moto server, started on first use.
pub fn moto() -> &'static Moto {
    MOTO.get_or_init(|| {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let supervisor = format!(
            "import subprocess, sys\n\
             p = subprocess.Popen([sys.executable, '-c', {SERIALISED:?}, '{port}'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n\
             sys.stdin.read()\n\
             p.kill()\n"
        );
        let mut child = Command::new("python3")
            .args(["-c", &supervisor])
            .stdin(Stdio::piped())
            .spawn()
            .expect("python3 with moto[server] installed (make test installs it)");
        let stdin = child.stdin.take().expect("a piped stdin");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "moto did not start (pip install 'moto[server]')");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { url: format!("http://127.0.0.1:{port}"), _lifeline: Mutex::new((child, stdin)) }
    })
}
