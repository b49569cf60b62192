//! A nats-server of a test's own: a free port, its own store directory, killed with SIGKILL and
//! started again on the same port and store by the fault runs. Never the machine's server.
//! Shared by the bus's fault run and the binary's (`crates/driftless/tests/pg_nats_faults.rs`
//! includes this file by path).

#![allow(dead_code)] // each includer uses its own subset

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The nats-server program: `DRIFTLESS_TEST_NATS_SERVER`, else `/usr/sbin/nats-server`, else
/// `nats-server` on the `PATH`; `None` when none exists.
pub fn program() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("DRIFTLESS_TEST_NATS_SERVER") {
        return Some(p.into());
    }
    let sbin = std::path::Path::new("/usr/sbin/nats-server");
    if sbin.exists() {
        return Some(sbin.to_owned());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.exists())
    })
}

pub struct NatsServer {
    pub port: u16,
    program: std::path::PathBuf,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts `program` with JetStream on `port`, storing in `dir`; returns once it listens.
    pub fn start(program: &std::path::Path, port: u16, dir: &std::path::Path) -> NatsServer {
        let mut s = NatsServer {
            port,
            program: program.to_owned(),
            dir: dir.to_owned(),
            child: None,
        };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again), on the same port and store; returns once it listens.
    pub fn spawn(&mut self) {
        let child = Command::new(&self.program)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("nats-server did not listen on {} within 10 s", self.port);
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
