//! Where the machine's CPU goes during a measured phase, by whom: the PostgreSQL server (every
//! backend, including those that ended during the phase, which the postmaster has reaped into its
//! children's time), this process (the hubs and the client, or the ceiling's publishers and
//! copiers), the NATS server, everything else, and idle. Read from `/proc` before and after.
//!
//! On a machine whose cores are all busy, events/s is the cores divided by the CPU each event
//! costs, so CPU per event is what a design change has to lower, and adding one path's measured
//! cost to another's bounds what the sum can reach (see `bus_bound` in `main.rs`).

use std::time::Instant;

/// `/proc` counts in clock ticks of 1/100 s (`USER_HZ`, fixed at 100 on Linux for these files).
const TICKS_PER_S: f64 = 100.0;

#[derive(Clone, Copy, Default)]
struct Sample {
    db: u64,
    me: u64,
    nats: u64,
    busy: u64,
    idle: u64,
}

/// CPU seconds spent during a phase, by whom, and its wall time.
#[derive(Clone, Copy, Default)]
pub struct Spent {
    pub db: f64,
    pub me: f64,
    pub nats: f64,
    pub other: f64,
    pub idle: f64,
    pub wall: f64,
    /// Bytes the server wrote to its WAL during the phase (set by `crate::Phase`): every row,
    /// index entry, lock and commit record the work costs, in one number.
    pub wal: f64,
}

impl Spent {
    /// All CPU seconds spent, idle excluded.
    pub fn busy(&self) -> f64 {
        self.db + self.me + self.nats + self.other
    }

    /// `µs` of CPU per event, idle excluded.
    pub fn per_event_us(&self, events: usize) -> f64 {
        self.busy() * 1e6 / events.max(1) as f64
    }

    /// WAL bytes per event.
    pub fn wal_per_event(&self, events: usize) -> f64 {
        self.wal / events.max(1) as f64
    }

    /// One line: CPU per event by whom, and the machine's idle share.
    pub fn line(&self, events: usize) -> String {
        let us = |s: f64| s * 1e6 / events.max(1) as f64;
        let total = self.busy() + self.idle;
        format!(
            "{:.1} µs/event: PostgreSQL {:.1}, this process {:.1}, NATS {:.1}, other {:.1}; idle {:.0}%; WAL {:.0} B/event",
            self.per_event_us(events),
            us(self.db),
            us(self.me),
            us(self.nats),
            us(self.other),
            if total > 0.0 {
                100.0 * self.idle / total
            } else {
                0.0
            },
            self.wal_per_event(events)
        )
    }
}

/// A phase being measured.
pub struct Meter {
    at: Sample,
    start: Instant,
}

impl Meter {
    pub fn start() -> Meter {
        Meter {
            at: sample(),
            start: Instant::now(),
        }
    }

    pub fn stop(&self) -> Spent {
        let now = sample();
        let d = |a: u64, b: u64| a.saturating_sub(b) as f64 / TICKS_PER_S;
        let (db, me, nats) = (
            d(now.db, self.at.db),
            d(now.me, self.at.me),
            d(now.nats, self.at.nats),
        );
        Spent {
            db,
            me,
            nats,
            other: (d(now.busy, self.at.busy) - db - me - nats).max(0.0),
            idle: d(now.idle, self.at.idle),
            wall: self.start.elapsed().as_secs_f64(),
            wal: 0.0,
        }
    }
}

fn sample() -> Sample {
    let mut s = Sample::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/stat")
        && let Some(line) = stat.lines().next()
    {
        // cpu user nice system idle iowait irq softirq steal ...
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        s.busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
        s.idle = at(3) + at(4);
    }
    s.me = process_ticks("self").map(|(_, t)| t).unwrap_or(0);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return s;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        match process_ticks(pid) {
            Some((comm, t)) if comm == "postgres" => s.db += t,
            Some((comm, t)) if comm == "nats-server" => s.nats += t,
            _ => {}
        }
    }
    s
}

/// A process's name and its CPU ticks: its own (every thread) and its reaped children's.
fn process_ticks(pid: &str) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is in parentheses and may hold spaces: the fields follow the last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let f: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state is field 3, so utime (14), stime (15), cutime (16), cstime (17).
    let n = |i: usize| {
        f.get(i - 3)
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some((comm, n(14) + n(15) + n(16) + n(17)))
}
