//! `X-Amzn-Trace-Id`, as ALB writes it: `Root=1-<8 hex unix time>-<24 hex random>`.
//! A well-formed id from the client keeps its `Root` (so a trace spans several hops)
//! and gets a fresh `Self`; anything else is replaced.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use std::fmt::Write as _;

use http::HeaderMap;

pub const HEADER: &str = "x-amzn-trace-id";
const MAX_HEADER_LEN: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceId {
    /// `1-5f84c7a9-...`: what error pages show and logs and flow records are keyed by.
    pub root: String,
    /// The full header value sent upstream and logged as `trace_id`.
    pub header: String,
}

impl TraceId {
    pub fn for_request(headers: &HeaderMap, unix_secs: u64) -> Self {
        let fresh = new_id(unix_secs);
        let incoming = headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= MAX_HEADER_LEN);
        if let Some(value) = incoming {
            let fields: Vec<&str> = value
                .split(';')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .collect();
            let root = fields
                .iter()
                .find_map(|f| f.strip_prefix("Root="))
                .filter(|r| valid_id(r));
            let others_ok = fields.iter().all(|f| {
                f.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"=-_.".contains(&b))
            });
            if let (Some(root), true) = (root, others_ok) {
                let mut kept: Vec<String> = fields
                    .iter()
                    .filter(|f| !f.starts_with("Self="))
                    .map(|f| f.to_string())
                    .collect();
                kept.insert(1.min(kept.len()), format!("Self={fresh}"));
                return Self {
                    root: root.to_owned(),
                    header: kept.join(";"),
                };
            }
        }
        Self {
            header: format!("Root={fresh}"),
            root: fresh,
        }
    }
}

/// Random bytes from the system RNG, drawn a block at a time per thread: one system
/// call serves this many ids instead of one each.
const RANDOM_BLOCK: usize = 12 * 256;

thread_local! {
    static RANDOM: std::cell::RefCell<([u8; RANDOM_BLOCK], usize)> =
        const { std::cell::RefCell::new(([0; RANDOM_BLOCK], RANDOM_BLOCK)) };
}

/// The next 12 random bytes of this thread's block.
fn random_12() -> [u8; 12] {
    RANDOM.with_borrow_mut(|(block, used)| {
        if *used == RANDOM_BLOCK {
            // The system RNG does not fail on supported platforms; a zero id still works.
            let _ = SystemRandom::new().fill(block);
            *used = 0;
        }
        let mut out = [0u8; 12];
        out.copy_from_slice(&block[*used..*used + 12]);
        // Handed out once: an id never shares its bytes with another.
        block[*used..*used + 12].fill(0);
        *used += 12;
        out
    })
}

fn new_id(unix_secs: u64) -> String {
    let random = random_12();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(35);
    let _ = write!(id, "1-{:08x}-", unix_secs as u32);
    for b in random {
        id.push(HEX[usize::from(b >> 4)] as char);
        id.push(HEX[usize::from(b & 15)] as char);
    }
    id
}

/// `1-` + 8 hex + `-` + 24 hex.
pub fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 35
        && id.starts_with("1-")
        && b[10] == b'-'
        && b[2..10]
            .iter()
            .chain(&b[11..])
            .all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER, v.parse().unwrap());
        h
    }

    #[test]
    fn ids_stay_distinct_across_the_random_blocks() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_id(1)).collect();
        assert_eq!(ids.len(), 1000, "1000 ids span four blocks of random bytes");
        assert!(
            ids.iter()
                .all(|id| valid_id(id) && !id.ends_with(&"0".repeat(24)))
        );
    }

    #[test]
    fn new_ids_have_albs_shape() {
        let t = TraceId::for_request(&HeaderMap::new(), 0x5f84c7a9);
        assert!(valid_id(&t.root), "{}", t.root);
        assert!(t.root.starts_with("1-5f84c7a9-"));
        assert_eq!(t.header, format!("Root={}", t.root));
        assert_ne!(
            t.root,
            TraceId::for_request(&HeaderMap::new(), 0x5f84c7a9).root
        );
    }

    #[test]
    fn a_valid_root_is_kept_and_self_added() {
        let root = "1-67891233-abcdef012345678912345678";
        let t = TraceId::for_request(
            &headers(&format!(
                "Root={root};Self=1-00000000-000000000000000000000000;Sampled=1"
            )),
            1,
        );
        assert_eq!(t.root, root);
        assert!(
            t.header
                .starts_with(&format!("Root={root};Self=1-00000001-")),
            "{}",
            t.header
        );
        assert!(t.header.ends_with(";Sampled=1"));
        assert_eq!(t.header.matches("Self=").count(), 1);
    }

    #[test]
    fn malformed_or_hostile_ids_are_replaced() {
        for bad in [
            "Root=1-zz-1",
            "Root=1-67891233-abcdef012345678912345678;x=\"<script>",
            "garbage",
        ] {
            let t = TraceId::for_request(&headers(bad), 7);
            assert!(t.root.starts_with("1-00000007-"), "{bad} -> {}", t.root);
        }
    }
}
