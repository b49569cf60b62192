//! Sku patterns: `*` matches any run of characters, `?` exactly one; everything else is literal.
//! Enough for the `TEE-*` / `HOT-*` rules operators write, and small enough to reason about.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    /// Any non-empty pattern of at most 128 bytes is valid.
    pub fn new(pattern: impl Into<String>) -> Result<Self, String> {
        let p = pattern.into();
        if p.is_empty() {
            return Err("pattern must not be empty".into());
        }
        if p.len() > 128 {
            return Err("pattern must be at most 128 bytes".into());
        }
        Ok(Glob(p))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Iterative matcher with single-star backtracking: linear in practice, no recursion, so a
    /// hostile pattern cannot blow the stack.
    pub fn matches(&self, text: &str) -> bool {
        let p: Vec<char> = self.0.chars().collect();
        let t: Vec<char> = text.chars().collect();
        let (mut pi, mut ti) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some((pi, ti));
                pi += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        while pi < p.len() && p[pi] == '*' {
            pi += 1;
        }
        pi == p.len()
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.0)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn matches_like_shell_patterns() {
        let g = |p: &str| Glob::new(p).unwrap();
        assert!(g("TEE-*").matches("TEE-BLK-M"));
        assert!(g("TEE-*").matches("TEE-"));
        assert!(!g("TEE-*").matches("XTEE-1"));
        assert!(g("*").matches(""));
        assert!(g("*-M").matches("TEE-BLK-M"));
        assert!(!g("*-M").matches("TEE-BLK-L"));
        assert!(g("T?E*K*").matches("TEE-BLK-M"));
        assert!(g("A").matches("A"));
        assert!(!g("A").matches("AB"));
        assert!(g("*a*a*a*b").matches("aaaaaaaaaaaaaaab"));
        assert!(!g("*a*a*a*b").matches("aaaaaaaaaaaaaaaa"));
    }
}
