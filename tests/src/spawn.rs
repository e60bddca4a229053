//! Processes under test.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago (bind :0, read it back, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind :0")
        .local_addr()
        .expect("addr")
        .port()
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Where the workspace binaries are: `STELLAR_BIN_DIR`, else `target/debug` next to this test
/// executable (`target/debug/deps/<test>` → `target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("STELLAR_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of workspace binary `name`; panics with a hint if it has not been built.
pub fn bin_path(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        p.display()
    );
    p
}

/// The repository root (for config/ and landing/).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p =
            std::env::temp_dir().join(format!("stellar-{tag}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running service process, killed when dropped.
pub struct Service {
    pub name: String,
    child: Option<Child>,
    bin: PathBuf,
    env: Vec<(String, String)>,
    health_url: String,
    log_path: PathBuf,
}

impl Service {
    /// Start workspace binary `bin` with `env` added to the environment (run from the repo
    /// root, so `config/` resolves), and wait up to 30 s until `health_url` answers 200.
    pub fn start(bin: &str, env: &[(&str, String)], health_url: &str) -> anyhow::Result<Service> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let log_path = std::env::temp_dir().join(format!(
            "stellar-{bin}-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let mut s = Service {
            name: bin.to_string(),
            child: None,
            bin: bin_path(bin),
            env,
            health_url: health_url.to_string(),
            log_path,
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn()?);
        self.wait_healthy(Duration::from_secs(30))
    }

    /// Poll the health URL until it answers 200 (or the process exits, or time runs out).
    pub fn wait_healthy(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let client = probe::Probe;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!(
                        "{} exited with {status} before becoming healthy; log:\n{}",
                        self.name,
                        self.log()
                    );
                }
            }
            if let Ok(r) = client.get(&self.health_url) {
                if r == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "{} not healthy at {} within {within:?}; log:\n{}",
                    self.name,
                    self.health_url,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the process has printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait up to 30 s for a clean exit; returns whether it exited with success.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        signal(c.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match c.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    return false;
                }
            }
        }
    }

    /// Start again with the same binary, environment and ports.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// Send a signal by name with kill(1) (keeps the crate free of unsafe code).
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// SIGTERM `child`, wait up to `grace` for it to exit, then SIGKILL it.
pub fn terminate(child: &mut Child, grace: Duration) {
    signal(child.id(), "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A fresh PostgreSQL database for this test (see `stellar_common::testing`): `None` with a
/// printed reason outside CI when the server is unreachable; a panic in CI.
pub fn pg_url_for_test() -> Option<String> {
    stellar_common::testing::fresh_postgres_db_blocking()
}

/// A tiny blocking HTTP probe used for health polling (std only, so it works before and outside
/// any async runtime).
pub mod probe {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    pub struct Probe;

    impl Probe {
        /// GET `url` (http://host:port/path), returning the status code.
        pub fn get(&self, url: &str) -> std::io::Result<u16> {
            let rest = url
                .strip_prefix("http://")
                .ok_or_else(|| std::io::Error::other("http only"))?;
            let (host, path) = rest
                .split_once('/')
                .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
            let mut s = TcpStream::connect(host)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            )?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf)?;
            let head = String::from_utf8_lossy(&buf[..n]);
            head.split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| std::io::Error::other("bad status line"))
        }
    }
}

/// A private `redis-server` (no persistence) on a port of the caller's choice, so a test can
/// stop it and start it again on the same port. Stopped when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Start it and wait until it accepts connections. `None`, with a printed reason, when
    /// redis-server is not installed outside CI; in CI (`CI=true`) that is a failure.
    pub fn start(port: u16) -> Option<RedisServer> {
        let spawned = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--bind",
                "127.0.0.1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    std::env::var("CI").is_err(),
                    "redis-server must be installed in CI: {e}"
                );
                eprintln!("SKIPPED (Redis part): cannot start redis-server: {e}");
                return None;
            }
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(RedisServer {
            port,
            child: Some(child),
        })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill it (the data is gone: it keeps nothing on disk).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
