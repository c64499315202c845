//! Redis' glob patterns (`SCAN ... MATCH`, `KEYS`), matched here the way the server matches
//! them, so a key a change report names can be checked against a metric's pattern without a
//! round trip; and the literal prefix a pattern's keys all share, which is what `CLIENT TRACKING
//! ... PREFIX` can watch.

/// Whether `key` matches `pattern` by Redis' rules (`stringmatchlen` in `util.c`): `*` any run,
/// `?` one byte, `[abc]`, `[^abc]`, `[a-z]`, and `\` quoting the next byte.
pub fn matches(pattern: &[u8], key: &[u8]) -> bool {
    let (mut p, mut k) = (0, 0);
    // Where to resume after the last `*`: its pattern position and the key position it covers to.
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, k));
                    continue;
                }
                _ if k < key.len() => {
                    if let Some(next) = one(pattern, p, key[k]) {
                        p = next;
                        k += 1;
                        continue;
                    }
                }
                _ => {}
            }
        } else if k == key.len() {
            return true;
        }
        // Mismatch: let the last `*` take one more byte, if there is one to take.
        match star {
            Some((sp, sk)) if sk < key.len() => {
                star = Some((sp, sk + 1));
                p = sp;
                k = sk + 1;
            }
            _ => return false,
        }
    }
}

/// Whether the single-byte element at `pattern[p]` (`?`, a class, an escape or a literal)
/// matches `c`; if so, where the pattern goes on.
fn one(pattern: &[u8], p: usize, c: u8) -> Option<usize> {
    match pattern[p] {
        b'?' => Some(p + 1),
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == c).then_some(p + 2),
        b'[' => {
            let mut i = p + 1;
            let negate = pattern.get(i) == Some(&b'^');
            if negate {
                i += 1;
            }
            let mut hit = false;
            loop {
                match pattern.get(i) {
                    // An unclosed class ends with the pattern (as Redis treats it).
                    None => {
                        i = pattern.len();
                        break;
                    }
                    Some(b']') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < pattern.len() => {
                        hit |= pattern[i + 1] == c;
                        i += 2;
                    }
                    Some(&lo) if pattern.get(i + 1) == Some(&b'-') && i + 2 < pattern.len() => {
                        let hi = pattern[i + 2];
                        let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                        hit |= (lo..=hi).contains(&c);
                        i += 3;
                    }
                    Some(&b) => {
                        hit |= b == c;
                        i += 1;
                    }
                }
            }
            (hit != negate).then_some(i)
        }
        b => (b == c).then_some(p + 1),
    }
}

/// The literal text every key matching `pattern` starts with (up to its first wildcard, escapes
/// resolved): `bull:*:wait` → `bull:`.
pub fn literal_prefix(pattern: &str) -> String {
    let bytes = pattern.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'*' | b'?' | b'[' => break,
            b'\\' if i + 1 < bytes.len() => {
                out.push(bytes[i + 1]);
                i += 2;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_redis() {
        let yes = [
            ("queue:*", "queue:embed"),
            ("queue:*", "queue:"),
            ("bull:*:wait", "bull:embed:wait"),
            ("bull:*:wait", "bull:a:b:wait"),
            ("q?", "q1"),
            ("jobs:[ab]*", "jobs:a1"),
            ("jobs:[^ab]", "jobs:c"),
            ("jobs:[a-c]", "jobs:b"),
            ("jobs:[c-a]", "jobs:b"),
            ("a\\*b", "a*b"),
            ("*", ""),
            ("**x", "yyx"),
            ("[\\]]", "]"),
        ];
        for (p, k) in yes {
            assert!(matches(p.as_bytes(), k.as_bytes()), "{p} should match {k}");
        }
        let no = [
            ("queue:*", "queues:x"),
            ("bull:*:wait", "bull:embed:123"),
            ("q?", "q12"),
            ("jobs:[ab]", "jobs:c"),
            ("jobs:[^ab]", "jobs:a"),
            ("a\\*b", "axb"),
            ("x*", ""),
        ];
        for (p, k) in no {
            assert!(
                !matches(p.as_bytes(), k.as_bytes()),
                "{p} should not match {k}"
            );
        }
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(literal_prefix("bull:*:wait"), "bull:");
        assert_eq!(literal_prefix("queue:*"), "queue:");
        assert_eq!(literal_prefix("*:queue"), "");
        assert_eq!(literal_prefix("a\\*b*"), "a*b");
        assert_eq!(literal_prefix("rq:queue:[ab]"), "rq:queue:");
    }
}
