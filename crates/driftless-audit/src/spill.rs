//! Hash partitioning of parsed rows, in memory for small audits and spilled to temporary files for
//! large ones, so that memory stays bounded however large the snapshots are: every row of one sku
//! (all its locations, every system, its change-log entries) lands in the same partition, and the
//! join then works one partition at a time.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Buffered bytes per partition before they are written out (when spilling).
const FLUSH_AT: usize = 256 * 1024;

/// A temporary directory removed when dropped.
#[derive(Debug)]
pub(crate) struct SpillDir {
    path: PathBuf,
}

impl SpillDir {
    /// A fresh directory: process id, a per-process counter and the clock make the name unique
    /// even for audits started in the same instant by one process (tests, a scheduler);
    /// `create_dir` refusing an existing name keeps two audits from ever sharing one.
    pub(crate) fn create() -> std::io::Result<SpillDir> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let base = std::env::temp_dir();
        loop {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let path = base.join(format!(
                "driftless-audit-{}-{n}-{nanos}",
                std::process::id()
            ));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(SpillDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        // Best effort: a leftover directory in the temp dir is harmless, a panic in drop is not.
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// One writer per reading thread: `parts` buffers, each flushed to its own file when spilling.
#[derive(Debug)]
pub(crate) struct PartWriter {
    bufs: Vec<Vec<u8>>,
    files: Vec<Option<File>>,
    dir: Option<PathBuf>,
    worker: usize,
}

impl PartWriter {
    /// `reserve`: bytes to reserve per partition up front (in memory: the expected size, so the
    /// buffers never move while growing; address space that is never written costs nothing).
    pub(crate) fn new(
        parts: usize,
        dir: Option<&Path>,
        worker: usize,
        reserve: usize,
    ) -> PartWriter {
        PartWriter {
            bufs: (0..parts).map(|_| Vec::with_capacity(reserve)).collect(),
            files: (0..parts).map(|_| None).collect(),
            dir: dir.map(Path::to_path_buf),
            worker,
        }
    }

    pub(crate) fn parts(&self) -> usize {
        self.bufs.len()
    }

    /// The buffer of partition `p`, to append one encoded record to; call [`PartWriter::done`]
    /// after each record.
    pub(crate) fn buf(&mut self, p: usize) -> &mut Vec<u8> {
        &mut self.bufs[p]
    }

    pub(crate) fn done(&mut self, p: usize) -> std::io::Result<()> {
        if self.dir.is_some() && self.bufs[p].len() >= FLUSH_AT {
            self.flush(p)?;
        }
        Ok(())
    }

    fn flush(&mut self, p: usize) -> std::io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        if self.files[p].is_none() {
            let path = dir.join(format!("p{p}-w{}", self.worker));
            self.files[p] = Some(File::create(path)?);
        }
        if let Some(f) = self.files[p].as_mut() {
            f.write_all(&self.bufs[p])?;
        }
        self.bufs[p].clear();
        Ok(())
    }

    /// Turns the writer into what the join reads back: every partition's bytes.
    pub(crate) fn finish(mut self) -> std::io::Result<PartReader> {
        if self.dir.is_some() {
            for p in 0..self.bufs.len() {
                self.flush(p)?;
            }
        }
        Ok(PartReader {
            bufs: self.bufs,
            files: self.files.iter().map(Option::is_some).collect(),
            dir: self.dir,
            worker: self.worker,
        })
    }
}

/// The partitions one worker wrote.
#[derive(Debug)]
pub(crate) struct PartReader {
    bufs: Vec<Vec<u8>>,
    files: Vec<bool>,
    dir: Option<PathBuf>,
    worker: usize,
}

impl PartReader {
    /// Claims partition `p`: its in-memory bytes and its spill file, to be read by
    /// [`Claim::read_into`] outside any lock shared with other workers.
    pub(crate) fn claim(&mut self, p: usize) -> Claim {
        Claim {
            rest: std::mem::take(&mut self.bufs[p]),
            file: if self.files[p] {
                self.dir
                    .as_ref()
                    .map(|d| d.join(format!("p{p}-w{}", self.worker)))
            } else {
                None
            },
        }
    }
}

/// One worker's share of one partition.
#[derive(Debug)]
pub(crate) struct Claim {
    rest: Vec<u8>,
    file: Option<PathBuf>,
}

impl Claim {
    /// Puts the bytes in `out`, reusing its allocation when they come from a spill file (so each
    /// partition does not fault in fresh memory).
    pub(crate) fn read_into(self, out: &mut Vec<u8>) -> std::io::Result<()> {
        match self.file {
            None => *out = self.rest,
            Some(path) => {
                out.clear();
                File::open(&path)?.read_to_end(out)?;
                let _ = fs::remove_file(path);
                out.extend_from_slice(&self.rest);
            }
        }
        Ok(())
    }
}

/// A fast, non-cryptographic hash of a byte string (FxHash's mixing, word at a time). The inputs
/// are operators' own files, so flooding resistance buys nothing and costs a third of the join.
#[inline]
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    // Final avalanche so that the high bits (used for partitioning) depend on every byte.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// Maps 32 hash bits (`h < 2^32`) to `0..n` by multiply-shift instead of a division: a division
/// per row was a visible share of reading.
#[inline]
pub(crate) fn bucket(h: u64, n: usize) -> usize {
    (((h & 0xffff_ffff) * n as u64) >> 32) as usize
}

/// MurmurHash3's 64-bit finalizer, with a different seed than the partitioning.
#[inline]
fn remix(h: u64) -> u64 {
    let mut x = h ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// `BuildHasher` for the join's maps, over [`hash_bytes`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FastHash;

impl std::hash::BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Remixed: the rows reaching one map share bits of `hash_bytes` (the partition and
        // sub-partition were chosen from them), and hashbrown takes its bucket from the low bits
        // and its tag from the top ones. A bijective remix spreads them again.
        self.0 = self.0.rotate_left(7) ^ remix(hash_bytes(bytes));
    }
    fn write_u8(&mut self, i: u8) {
        self.0 = self.0.rotate_left(7) ^ u64::from(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.0 = self.0.rotate_left(7) ^ i as u64;
    }
}
