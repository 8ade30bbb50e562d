//! The system's root certificates are read once per process (most of a cold
//! start is that reading): the binary, served one SQS batch through a Lambda Runtime
//! API, opens its root store once — for the Dataverse client (reqwest) built at
//! init and the AWS SDK's client (Secrets Manager) that connects later alike.
//! The store is a file of its own (`SSL_CERT_FILE`), watched with inotify, so
//! whichever TLS stack reads it is counted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use crate::helpers::*;
use serde_json::Value;

/// Counts the opens of one file by any process, from now on.
struct Opens(std::os::fd::OwnedFd);

impl Opens {
    fn of(path: &std::path::Path) -> Opens {
        use std::os::fd::FromRawFd;
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify is available");
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // Closes between the opens keep the kernel from merging two opens into one event.
        let watch = unsafe { libc::inotify_add_watch(std::os::fd::AsRawFd::as_raw_fd(&fd), name.as_ptr(), libc::IN_OPEN | libc::IN_CLOSE_NOWRITE) };
        assert!(watch >= 0, "the root store is watched");
        Opens(fd)
    }

    fn count(self) -> usize {
        let mut file = std::fs::File::from(self.0);
        let mut events = Vec::new();
        let mut buffer = [0u8; 4096];
        while let Ok(n) = file.read(&mut buffer) {
            if n == 0 {
                break;
            }
            events.extend_from_slice(&buffer[..n]);
        }
        let (mut opens, mut at) = (0, 0);
        while at + 16 <= events.len() {
            let mask = u32::from_ne_bytes(events[at + 4..at + 8].try_into().unwrap());
            let len = u32::from_ne_bytes(events[at + 12..at + 16].try_into().unwrap()) as usize;
            opens += usize::from(mask & libc::IN_OPEN != 0);
            at += 16 + len;
        }
        opens
    }
}

/// One request of a keep-alive connection: its request line and body.
fn request(reader: &mut BufReader<TcpStream>) -> Option<(String, Vec<u8>)> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((line, body))
}

/// A Lambda Runtime API on loopback that hands out `event` once and sends the
/// function's answer on `answered`.
fn runtime_api(event: Value, answered: mpsc::Sender<Value>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let event = std::sync::Arc::new(std::sync::Mutex::new(Some(event.to_string())));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (event, answered) = (event.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                while let Some((line, body)) = request(&mut reader) {
                    if line.contains("/invocation/next") {
                        let Some(payload) = event.lock().unwrap().take() else { return };
                        let deadline = chrono::Utc::now().timestamp_millis() + 30_000;
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nlambda-runtime-aws-request-id: root-store-1\r\nlambda-runtime-deadline-ms: {deadline}\r\n\
                             lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:000000000000:function:relay\r\ncontent-length: {}\r\n\r\n",
                            payload.len()
                        );
                        let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(payload.as_bytes()));
                    } else {
                        let _ = answered.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
                        let _ = stream.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n");
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_function_reads_the_root_store_once_for_every_tls_client() {
    let sandbox = d365_sandbox::Sandbox::start(sandbox_config(), 0).await.unwrap();
    let store = std::env::temp_dir().join(format!("d365-relay-tests-roots-{}.pem", std::process::id()));
    std::fs::write(&store, include_str!("test-root.pem")).unwrap();
    let opens = Opens::of(&store);
    let (answered, answer) = mpsc::channel();
    let api = runtime_api(event_file("sqs-standard.json"), answered);
    let store_path = store.to_string_lossy();
    let lambda = [
        ("AWS_LAMBDA_RUNTIME_API", api.as_str()),
        ("AWS_LAMBDA_FUNCTION_NAME", "relay"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "root-store"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "root-store"),
        ("SSL_CERT_FILE", &store_path),
        ("SSL_CERT_DIR", ""),
    ];
    let mut child = relay_command(&sandbox, &lambda).stdout(std::process::Stdio::null()).spawn().expect("the binary runs");
    let response = tokio::task::spawn_blocking(move || answer.recv_timeout(Duration::from_secs(30))).await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let response = response.expect("the function answered the invocation");
    // Both records delivered: the secret read through the AWS SDK, the token and
    // the triggers through reqwest, each with its TLS configuration built.
    assert_eq!(response, serde_json::json!({"batchItemFailures": []}));
    assert!(!sandbox.accepted().is_empty(), "the batch reached Dynamics");
    assert_eq!(opens.count(), 1, "the root store is read once per process");
    let _ = std::fs::remove_file(&store);
}
