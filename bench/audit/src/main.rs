//! The drift audit's benchmark program: generates snapshot files, runs the audit in-process, and
//! runs a bare CSV parse of the same files (the floor any CSV-reading audit stands on). The peer
//! (DuckDB) and the timing/peak-memory measurement live in `run.sh`, so that every contender is
//! measured the same way, from outside, as a separate process.
//!
//! ```text
//! audit-bench gen   --rows N --out DIR [--shuffled] [--seed S]
//! audit-bench audit DIR [--in-memory]
//! audit-bench parse DIR [--threads T] [--typed]
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

const CONFIG: &str = r#"[[systems]]
id = "wms"
role = "wms"
[[systems]]
id = "erp"
role = "erp"
[[systems]]
id = "shop"
role = "storefront"

[[units]]
sku = "*"
unit = "CS"
factor = 12

[[channels]]
id = "shop"
locations = ["DC1", "DC2"]

[audit]
chain = ["wms", "erp", "shop"]
threshold_units = 2
threshold_pct = 1.0
"#;

const FILES: [&str; 4] = ["baseline.csv", "wms.csv", "erp.csv", "shop.csv"];

/// xorshift64*: deterministic, dependency-free, plenty for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("gen") => generate(&args),
        Some("audit") => audit(&args),
        Some("parse") => parse(&args),
        _ => Err("usage: audit-bench gen --rows N --out DIR [--shuffled] | audit DIR | parse DIR [--threads T]".into()),
    };
    if let Err(e) = result {
        eprintln!("{e}");
        std::process::exit(2);
    }
}

/// `rows` skus, each at one location (DC1 or DC2), so every one of the four files has `rows`
/// rows. About 1% of skus drift, spread over the hand-offs and causes.
fn generate(args: &[String]) -> Result<(), String> {
    let rows: u64 = arg(args, "--rows")
        .ok_or("--rows N")?
        .parse()
        .map_err(|e| format!("--rows: {e}"))?;
    let out = PathBuf::from(arg(args, "--out").ok_or("--out DIR")?);
    let shuffled = args.iter().any(|a| a == "--shuffled");
    let seed: u64 = arg(args, "--seed").map_or(42, |s| s.parse().unwrap_or(42));
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    std::fs::write(out.join("driftless.toml"), CONFIG).map_err(|e| e.to_string())?;
    std::fs::write(out.join("at.txt"), "2026-11-20T12:00:00Z\n").map_err(|e| e.to_string())?;

    // Row order: identity, or a seeded permutation per file.
    let order = |salt: u64| -> Vec<u32> {
        let mut v: Vec<u32> = (0..rows as u32).collect();
        if shuffled {
            let mut r = Rng(seed ^ salt ^ 0x9e37_79b9_7f4a_7c15);
            for i in (1..v.len()).rev() {
                let j = r.below(i as u64 + 1) as usize;
                v.swap(i, j);
            }
        }
        v
    };
    // Per sku: (location, physical, wms on_hand, committed, erp on_hand, shop quantity).
    let values = |i: u64| {
        let mut r = Rng(seed.wrapping_add(i.wrapping_mul(0x9e37_79b9)) | 1);
        let physical = (r.below(500) + 20) as i64;
        let committed = r.below(10) as i64;
        let mut wms = physical;
        let kind = r.below(1000);
        if kind < 3 {
            wms -= 5 + r.below(10) as i64; // count variance
        }
        let mut erp = wms;
        if (3..5).contains(&kind) {
            erp = wms / 12; // uom mismatch
        } else if (5..7).contains(&kind) {
            erp = wms + 7; // unexplained
        }
        let mut shop = (erp - committed).max(0);
        if (7..10).contains(&kind) && committed > 2 {
            shop = erp; // committed not mapped
        }
        let loc = if i.is_multiple_of(2) { "DC1" } else { "DC2" };
        (loc, physical, wms, committed, erp, shop)
    };
    let write = |name: &str,
                 salt: u64,
                 header: &str,
                 line: &dyn Fn(&mut Vec<u8>, u64)|
     -> Result<(), String> {
        let f = File::create(out.join(name)).map_err(|e| e.to_string())?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(header.as_bytes()).map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(64);
        for i in order(salt) {
            buf.clear();
            line(&mut buf, u64::from(i));
            w.write_all(&buf).map_err(|e| e.to_string())?;
        }
        w.flush().map_err(|e| e.to_string())
    };
    write("baseline.csv", 1, "sku,location,quantity\n", &|b, i| {
        let (loc, p, ..) = values(i);
        let _ = writeln!(b, "SKU-{i:09},{loc},{p}");
    })?;
    write("wms.csv", 2, "sku,location,on_hand,committed\n", &|b, i| {
        let (loc, _, w, c, ..) = values(i);
        let _ = writeln!(b, "SKU-{i:09},{loc},{w},{c}");
    })?;
    write("erp.csv", 3, "sku,location,on_hand,committed\n", &|b, i| {
        let (loc, _, _, c, e, _) = values(i);
        let _ = writeln!(b, "SKU-{i:09},{loc},{e},{c}");
    })?;
    write("shop.csv", 4, "sku,quantity\n", &|b, i| {
        let (.., s) = values(i);
        let _ = writeln!(b, "SKU-{i:09},{s}");
    })?;
    Ok(())
}

fn audit(args: &[String]) -> Result<(), String> {
    let dir = PathBuf::from(args.get(1).ok_or("audit DIR")?);
    let settings = driftless_config::Settings::load(Some(&dir.join("driftless.toml")))
        .map_err(|e| e.to_string())?;
    let sys = |s: &str| driftless_core::SystemId::parse(s).map_err(|e| e.to_string());
    let input = driftless_audit::AuditInput {
        baseline: dir.join("baseline.csv"),
        snapshots: vec![
            (sys("wms")?, dir.join("wms.csv")),
            (sys("erp")?, dir.join("erp.csv")),
            (sys("shop")?, dir.join("shop.csv")),
        ],
        changes: vec![],
        at: "2026-11-20T12:00:00Z".parse().map_err(|e| format!("{e}"))?,
    };
    let t = Instant::now();
    // `--in-memory`: never spill (faster, but memory grows with the input).
    let mut tuning = driftless_audit::Tuning::default();
    if args.iter().any(|a| a == "--in-memory") {
        tuning.spill_above = u64::MAX;
    }
    let report = driftless_audit::run_files_tuned(&settings, &input, &|_| {}, &tuning)
        .map_err(|e| e.to_string())?;
    let handoffs: Vec<String> = report
        .handoffs
        .iter()
        .map(|h| format!("{}={}", h.handoff, h.drifting_skus))
        .collect();
    eprintln!(
        "audit: {} compared, {} drifting ({}) in {:.2}s",
        report.skus_compared,
        report.drifting,
        handoffs.join(" "),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Parses every field of every file with the same CSV reader the audit uses, on `threads`
/// threads (one file at a time each, like the audit), and sums one numeric column so the work
/// cannot be optimised away. No validation, no join: the floor.
fn parse(args: &[String]) -> Result<(), String> {
    let dir = PathBuf::from(args.get(1).ok_or("parse DIR")?);
    let threads: usize = arg(args, "--threads").map_or(2, |t| t.parse().unwrap_or(2));
    let typed = args.iter().any(|a| a == "--typed");
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let (next, dir) = (&next, &dir);
                s.spawn(move || {
                    let mut sum = 0u64;
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(f) = FILES.get(i) else { break };
                        sum = sum.wrapping_add(parse_one(&dir.join(f), typed));
                    }
                    sum
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    eprintln!(
        "{}: checksum {total} in {:.2}s",
        if typed { "typed parse" } else { "parse" },
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `typed`: also what any audit must do per row at the least: check the identifiers are UTF-8
/// and turn every quantity field into an integer.
fn parse_one(path: &Path, typed: bool) -> u64 {
    let Ok(f) = File::open(path) else { return 0 };
    let mut rdr = csv::ReaderBuilder::new()
        .buffer_capacity(1 << 20)
        .from_reader(f);
    let mut rec = csv::ByteRecord::new();
    let mut sum = 0u64;
    let ids = if path.ends_with("shop.csv") { 1 } else { 2 };
    while let Ok(true) = rdr.read_byte_record(&mut rec) {
        if typed {
            for (i, field) in rec.iter().enumerate() {
                if i < ids {
                    sum = sum.wrapping_add(std::str::from_utf8(field).map_or(0, str::len) as u64);
                } else {
                    let mut v: i64 = 0;
                    for c in field {
                        v = v * 10 + i64::from(c.wrapping_sub(b'0'));
                    }
                    sum = sum.wrapping_add(v as u64);
                }
            }
        } else if let Some(last) = rec.get(rec.len() - 1) {
            sum = sum.wrapping_add(last.len() as u64);
        }
    }
    sum
}
