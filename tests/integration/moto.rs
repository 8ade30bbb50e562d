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

/// The binary's one moto server, started on first use.
pub fn moto() -> &'static Moto {
    MOTO.get_or_init(|| {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let supervisor = format!(
            "import subprocess, sys\n\
             p = subprocess.Popen([sys.executable, '-m', 'moto.server', '-H', '127.0.0.1', '-p', '{port}'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n\
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
