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

    /// Makes this private server a replica of `primary`, and waits until it has synced.
    pub fn replicate(&self, primary: &TestRedis) {
        let private = self
            .private
            .as_ref()
            .expect("only a private server replicates");
        let (host, port) = primary
            .url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .split_once(':')
            .expect("host:port");
        let me = private.port.to_string();
        run(
            private.dir.path(),
            "redis-cli",
            &["-p", &me, "replicaof", host, port],
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !run(
            private.dir.path(),
            "redis-cli",
            &["-p", &me, "info", "replication"],
        )
        .contains("master_link_status:up")
        {
            assert!(Instant::now() < deadline, "the replica did not sync");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Detaches this replica from its primary (`REPLICAOF NO ONE`): it keeps what it has and
    /// takes writes from now on.
    pub fn detach(&self) {
        let private = self
            .private
            .as_ref()
            .expect("only a private server detaches");
        let me = private.port.to_string();
        run(
            private.dir.path(),
            "redis-cli",
            &["-p", &me, "replicaof", "no", "one"],
        );
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

fn redis_binary() -> String {
    std::env::var("DRCHRONO_TEST_REDIS_SERVER")
        .ok()
        .filter(|path| !path.is_empty())
        .unwrap_or_else(|| "redis-server".to_owned())
}

/// Runs `program` with `args` in `dir`; panics with its output if it fails.
fn run(dir: &std::path::Path, program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program} (scripts/test installs it): {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits until something accepts TCP connections on `port`.
fn wait_for_listener(port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on {addr} after 10 s");
}

/// The ACL user the TLS server knows (the default user is off).
pub const ACL_USER: &str = "drchrono-app";
/// Its password.
pub const ACL_PASSWORD: &str = "s3cret-Pa55";

/// A private `redis-server` that speaks only TLS, with a certificate for 127.0.0.1 signed by
/// a CA made for this test (`openssl`), and one ACL user ([`ACL_USER`]); the default user is
/// off, so a client without the user's password is refused.
pub struct TlsRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl TlsRedis {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        let path = dir.path();
        let openssl = |args: &[&str]| {
            run(path, "openssl", args);
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=drchrono-tower test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(
            path.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("write the certificate extensions");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        std::fs::write(
            path.join("users.acl"),
            format!("user default off\nuser {ACL_USER} on >{ACL_PASSWORD} ~* &* +@all\n"),
        )
        .expect("write the ACL file");
        let port = free_port();
        let child = Command::new(redis_binary())
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(["--tls-port", &port.to_string()])
            .args([
                "--tls-cert-file",
                "server.pem",
                "--tls-key-file",
                "server.key",
            ])
            .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
            .args(["--aclfile", "users.acl"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .current_dir(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server with TLS");
        wait_for_listener(port);
        Self { port, dir, child }
    }

    /// `rediss://USER:PASSWORD@127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!(
            "rediss://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{}/0",
            self.port
        )
    }

    /// The same server, with a wrong password.
    pub fn url_with_password(&self, password: &str) -> String {
        format!("rediss://{ACL_USER}:{password}@127.0.0.1:{}/0", self.port)
    }

    /// The test CA's certificate (PEM) and its path.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca_path()).expect("the test CA")
    }

    pub fn ca_path(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis Cluster of three masters (no replicas), each a private `redis-server` on a free
/// loopback port, joined by `redis-cli --cluster create`.
pub struct TestCluster {
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl TestCluster {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for the cluster");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let children: Vec<Child> = ports
            .iter()
            .map(|port| {
                let node = dir.path().join(port.to_string());
                std::fs::create_dir(&node).expect("node directory");
                Command::new(redis_binary())
                    .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                    .args([
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                    ])
                    .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                    .current_dir(&node)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start a cluster node")
            })
            .collect();
        let cluster = Self {
            ports,
            _dir: dir,
            children,
        };
        for port in &cluster.ports {
            wait_for_listener(*port);
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(nodes.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        run(cluster._dir.path(), "redis-cli", &args);
        // Every node agrees that all slots are served.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = cluster.ports.iter().all(|port| {
                run(
                    cluster._dir.path(),
                    "redis-cli",
                    &["-p", &port.to_string(), "cluster", "info"],
                )
                .contains("cluster_state:ok")
            });
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "the cluster did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// `redis://127.0.0.1:PORT/` of each node.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    /// How many keys each node holds (`DBSIZE`).
    pub fn keys_per_node(&self) -> Vec<u64> {
        self.ports
            .iter()
            .map(|port| {
                run(
                    self._dir.path(),
                    "redis-cli",
                    &["-p", &port.to_string(), "dbsize"],
                )
                .trim()
                .parse()
                .expect("DBSIZE is a number")
            })
            .collect()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
