//! A real PostgreSQL server in a temporary directory, for tests and
//! benchmarks: Debian's `postgresql` package (`.ci/run` installs it), made
//! with `initdb` and run with `pg_ctl` on a free loopback port, with
//! `wal_level = logical`. Postgres refuses to run as root, so as root it
//! runs as the `postgres` user the package creates. Stopped and removed
//! when dropped. A test tool, behind the crate's `testing` feature.

use std::io;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running server; stopped and deleted when dropped.
#[derive(Debug)]
pub struct LocalPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// The user the server runs as when we are root.
    run_as: Option<&'static str>,
    running: bool,
    /// Whether it serves TLS (and TCP clients only over TLS).
    tls: bool,
}

/// Where the server's programs are: `$TWINFLOW_POSTGRES_BIN`, else the
/// newest `/usr/lib/postgresql/*/bin` (Debian's layout), if installed.
pub fn postgres_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TWINFLOW_POSTGRES_BIN") {
        return Some(PathBuf::from(path));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

impl LocalPostgres {
    /// Makes a cluster in a new temporary directory and starts it.
    /// `Ok(None)` when PostgreSQL is not installed.
    pub fn start() -> io::Result<Option<Self>> {
        let Some(bin) = postgres_bin() else { return Ok(None) };
        let root = std::fs::metadata("/proc/self")?.uid() == 0;
        let dir = std::env::temp_dir().join(format!(
            "twinflow-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = Self { bin, dir, port, run_as: root.then_some("postgres"), running: false, tls: false };
        if root {
            check(Command::new("chown").arg("postgres:").arg(&server.dir).output()?, "chown")?;
        }
        let data = server.data();
        server.run("initdb", &["-D", &data, "-U", "twinflow", "-A", "trust", "-E", "UTF8", "--no-sync"])?;
        server.resume()?;
        Ok(Some(server))
    }

    /// A connection string for the `twinflow` superuser's `postgres` database.
    pub fn url(&self) -> String {
        format!("host=127.0.0.1 port={} user=twinflow dbname=postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server: `fast` (sessions ended, a clean shutdown) or else
    /// `immediate` (no shutdown checkpoint: the next start recovers from the WAL).
    pub fn stop(&mut self, fast: bool) -> io::Result<()> {
        if !self.running {
            return Ok(());
        }
        let data = self.data();
        self.run("pg_ctl", &["-D", &data, "-m", if fast { "fast" } else { "immediate" }, "-w", "stop"])?;
        self.running = false;
        Ok(())
    }

    /// Restarts the server serving TLS with `cert` and `key` (PEM files),
    /// and taking TCP connections only over TLS (`hostssl` in pg_hba.conf).
    pub fn require_tls(&mut self, cert: &Path, key: &Path) -> io::Result<()> {
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            let to = self.dir.join(to);
            std::fs::copy(from, &to)?;
            // The server refuses a key others may read.
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            if let Some(user) = self.run_as {
                check(Command::new("chown").arg(format!("{user}:")).arg(&to).output()?, "chown")?;
            }
        }
        let hba = Path::new(&self.data()).join("pg_hba.conf");
        let rules: String = std::fs::read_to_string(&hba)?
            .lines()
            .map(|line| match line.strip_prefix("host ") {
                Some(rest) => format!("hostssl {rest}\n"),
                None => format!("{line}\n"),
            })
            .collect();
        std::fs::write(&hba, rules)?;
        self.tls = true;
        self.stop(true)?;
        self.resume()
    }

    /// Starts the stopped server again (same data, same port) and waits until it takes connections.
    pub fn resume(&mut self) -> io::Result<()> {
        let data = self.data();
        let log = self.dir.join("server.log").display().to_string();
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c wal_level=logical -c max_replication_slots=8 \
             -c max_wal_senders=8 -c fsync=off -c synchronous_commit=off",
            self.port,
            self.dir.display()
        );
        if self.tls {
            let (cert, key) = (self.dir.join("server.crt"), self.dir.join("server.key"));
            options += &format!(" -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}", cert.display(), key.display());
        }
        self.run("pg_ctl", &["-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start"])?;
        self.running = true;
        Ok(())
    }

    /// The server's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) -> io::Result<()> {
        let path = self.bin.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&path);
                command
            }
            None => Command::new(&path),
        };
        // Somewhere the server's user may be.
        let output = command.args(args).current_dir(&self.dir).output()?;
        check(output, program).map_err(|e| io::Error::other(format!("{e}\n{}", self.log())))
    }
}

fn check(output: Output, what: &str) -> io::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )))
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        if let Err(error) = self.stop(false) {
            tracing::warn!(%error, "could not stop the local postgres");
        }
        let _ = std::fs::remove_dir_all(Path::new(&self.dir));
    }
}
