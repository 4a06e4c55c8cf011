//! A Redis server for tests: the shared one named by `DRCHRONO_TEST_REDIS_URL` (set by
//! `scripts/test`), or a private `redis-server` child process on a free loopback port. A
//! missing `redis-server` fails the test loudly: no test is skipped for want of Redis.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A Redis server the test may use; a private one is killed on drop.
pub struct TestRedis {
    url: String,
    private: Option<Private>,
}

struct Private {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl TestRedis {
    /// `DRCHRONO_TEST_REDIS_URL` when set, else a private server.
    pub fn shared() -> Self {
        match std::env::var("DRCHRONO_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => Self { url, private: None },
            _ => Self::private(),
        }
    }

    /// A private `redis-server` (from `DRCHRONO_TEST_REDIS_SERVER`, else `PATH`) on a free
    /// port: for tests that stop and restart it.
    pub fn private() -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        let mut private = Private {
            port,
            dir,
            child: None,
        };
        private.start();
        Self {
            url: format!("redis://127.0.0.1:{port}/"),
            private: Some(private),
        }
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Kills the private server (as a crash would: nothing saved).
    ///
    /// # Panics
    /// On the shared server: tests never stop it.
    pub fn stop(&mut self) {
        let private = self
            .private
            .as_mut()
            .expect("only a private server is stopped");
        if let Some(mut child) = private.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the private server again on the same port, empty.
    pub fn restart(&mut self) {
        let private = self
            .private
            .as_mut()
            .expect("only a private server is restarted");
        private.start();
    }
}

impl Private {
    fn start(&mut self) {
        let binary = std::env::var("DRCHRONO_TEST_REDIS_SERVER")
            .ok()
            .filter(|path| !path.is_empty())
            .unwrap_or_else(|| "redis-server".to_owned());
        let child = Command::new(&binary)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start {binary} (install redis-server or set DRCHRONO_TEST_REDIS_URL): {error}")
            });
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping(addr) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer PING on {addr} within 10 s");
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(private) = &mut self.private
            && let Some(mut child) = private.child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A key prefix no other test (or run) uses.
pub fn unique_prefix(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!(
        "test:{test}:{}:{nanos}:{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `GET key` over a plain RESP exchange (no client library): the value, if any.
pub fn get(url: &str, key: &str) -> Option<String> {
    let address = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = TcpStream::connect(address).expect("connect to Redis");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let command = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
    stream.write_all(command.as_bytes()).expect("send GET");
    let mut reply = Vec::new();
    let mut buffer = [0u8; 512];
    loop {
        let read = stream.read(&mut buffer).expect("read reply");
        reply.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&reply);
        if text.starts_with("$-1\r\n") {
            return None;
        }
        if let Some((header, rest)) = text.split_once("\r\n") {
            let length: usize = header.trim_start_matches('$').parse().expect("bulk reply");
            if rest.len() >= length + 2 {
                return Some(rest[..length].to_owned());
            }
        }
        assert!(read > 0, "Redis closed the connection");
    }
}
