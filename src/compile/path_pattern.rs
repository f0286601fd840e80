//! ALB path patterns (`*` any run of characters, `/` included; `?` exactly one),
//! matched against the whole canonical path in time linear in the path's length,
//! whatever the pattern: no path a client sends makes a pattern route expensive.
//!
//! A pattern is `head*mid*...*tail`. The head must match at the start and the tail at
//! the end; the pieces between stars are then found in order, each at its leftmost
//! place after the previous one. Leftmost is always right: a piece placed further
//! left leaves more room for the rest. Each search is a bit-parallel scan (Shift-And)
//! that reads every byte once, and the searches read disjoint stretches of the path.

/// The longest pattern ALB accepts. Every piece between stars then fits one 128-bit
/// word of the scan.
pub const MAX_PATTERN_LEN: usize = 128;

#[derive(Clone, Debug)]
pub struct PathPattern {
    source: String,
    /// Before the first `*` (the whole pattern when it has none).
    head: Vec<u8>,
    /// After the last `*`; `None` when the pattern has no `*`.
    tail: Option<Vec<u8>>,
    /// The non-empty pieces between stars, in order.
    middle: Vec<Piece>,
}

impl PartialEq for PathPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl PathPattern {
    /// The pattern, or why it cannot be one (too long).
    pub fn new(source: &str) -> Result<Self, String> {
        if source.len() > MAX_PATTERN_LEN {
            return Err(format!(
                "longer than the {MAX_PATTERN_LEN} characters ALB allows a path pattern"
            ));
        }
        let mut parts = source.as_bytes().split(|b| *b == b'*');
        let head = parts.next().unwrap_or_default().to_vec();
        let mut rest: Vec<&[u8]> = parts.collect();
        let tail = rest.pop().map(<[u8]>::to_vec);
        let middle = rest
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(Piece::new)
            .collect();
        Ok(Self {
            source: source.to_owned(),
            head,
            tail,
            middle,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches the whole of `path`.
    pub fn matches(&self, path: &str) -> bool {
        let s = path.as_bytes();
        let Some(tail) = &self.tail else {
            return fits(&self.head, s);
        };
        let (h, t) = (self.head.len(), tail.len());
        if s.len() < h + t || !fits(&self.head, &s[..h]) || !fits(tail, &s[s.len() - t..]) {
            return false;
        }
        let (mut at, end) = (h, s.len() - t);
        for piece in &self.middle {
            match piece.find_end(&s[at..end]) {
                Some(e) => at += e,
                None => return false,
            }
        }
        true
    }

    /// The literal start every matching path has: the pattern up to its first
    /// wildcard.
    pub fn literal_head(&self) -> &str {
        let end = self.source.find(['*', '?']).unwrap_or(self.source.len());
        &self.source[..end]
    }
}

/// `piece` matches `text` exactly, `?` standing for any one byte.
fn fits(piece: &[u8], text: &[u8]) -> bool {
    piece.len() == text.len() && piece.iter().zip(text).all(|(p, t)| *p == b'?' || p == t)
}

/// A piece between stars, ready for a Shift-And scan: bit `j` of a byte's mask is set
/// when the piece's byte `j` is that byte or `?`.
#[derive(Clone, Debug)]
struct Piece {
    len: usize,
    /// For each byte value, its mask's index in `masks` (0: the byte is not in the
    /// piece, so only the `?` positions accept it).
    slot: Box<[u8; 256]>,
    masks: Vec<u128>,
}

impl Piece {
    /// `piece` is 1 to 128 bytes long (`MAX_PATTERN_LEN` bounds it).
    fn new(piece: &[u8]) -> Self {
        let any = piece
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'?')
            .fold(0u128, |m, (j, _)| m | (1 << j));
        let mut slot = Box::new([0u8; 256]);
        let mut masks = vec![any];
        for (j, &b) in piece.iter().enumerate() {
            if b == b'?' {
                continue;
            }
            if slot[b as usize] == 0 {
                slot[b as usize] = masks.len() as u8;
                masks.push(any);
            }
            masks[slot[b as usize] as usize] |= 1 << j;
        }
        Self {
            len: piece.len(),
            slot,
            masks,
        }
    }

    /// Where the piece's leftmost occurrence in `text` ends, reading each byte once.
    fn find_end(&self, text: &[u8]) -> Option<usize> {
        let done = 1u128 << (self.len - 1);
        let mut state = 0u128;
        for (i, &b) in text.iter().enumerate() {
            state = ((state << 1) | 1) & self.masks[self.slot[b as usize] as usize];
            if state & done != 0 {
                return Some(i + 1);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::path_pattern_matches;
    use proptest::prelude::*;

    fn pattern(p: &str) -> PathPattern {
        PathPattern::new(p).unwrap()
    }

    #[test]
    fn wildcards_follow_alb() {
        let cases = [
            ("/*", "/", true),
            ("/*", "/a/b/c", true),
            ("/api/*", "/api/", true),
            ("/api/*", "/api", false),
            ("/api/*", "/api/v1/items", true),
            ("/api*", "/apix", true),
            ("/a?c", "/abc", true),
            ("/a?c", "/ac", false),
            ("/a?c", "/abbc", false),
            ("/img/*/pics", "/img/x/y/pics", true),
            ("/img/*/pics", "/img/pics", false),
            ("*.png", "/a/b.png", true),
            ("/API/*", "/api/x", false),
            ("/exact", "/exact", true),
            ("/exact", "/exact/", false),
            ("/a*b*c", "/abc", true),
            ("/a*b*c", "/acb", false),
            ("/a**b", "/ab", true),
            ("/*?", "/", false),
            ("/*?", "/x", true),
        ];
        for (p, path, want) in cases {
            assert_eq!(pattern(p).matches(path), want, "{p} against {path}");
        }
    }

    #[test]
    fn patterns_longer_than_albs_limit_are_refused() {
        assert!(PathPattern::new(&format!("/{}", "a".repeat(127))).is_ok());
        assert!(PathPattern::new(&format!("/{}", "a".repeat(128))).is_err());
    }

    #[test]
    fn the_literal_head_ends_at_the_first_wildcard() {
        assert_eq!(pattern("/api/*/x").literal_head(), "/api/");
        assert_eq!(pattern("/a?c*").literal_head(), "/a");
        assert_eq!(pattern("*").literal_head(), "");
    }

    /// The worst a client can do: a 64 KiB path that nearly matches a long piece at
    /// every place, against patterns of many stars. Each piece reads each byte at most
    /// once, where backtracking takes path length times piece length, or worse.
    #[test]
    fn hostile_paths_cost_one_pass() {
        let path = format!("/{}b", "a".repeat(64 * 1024));
        let many_stars = pattern(&format!("/{}c*b", "*a".repeat(60)));
        let long_piece = pattern(&format!("/*{}c*", "a".repeat(120)));
        let started = std::time::Instant::now();
        for _ in 0..10 {
            assert!(!many_stars.matches(&path));
            assert!(!long_piece.matches(&path));
        }
        assert!(pattern(&format!("/{}b", "*a".repeat(60))).matches(&path));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    proptest! {
        /// The same answers as the backtracking matcher AuthRule paths use, on every
        /// pattern and path over a small alphabet (where the two can disagree if at all).
        #[test]
        fn agrees_with_the_reference_matcher(
            p in "[ab/*?]{0,12}",
            s in "[ab/]{0,16}",
        ) {
            prop_assert_eq!(pattern(&p).matches(&s), path_pattern_matches(&p, &s));
        }
    }
}
