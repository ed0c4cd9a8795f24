//! Semantic versions as flagd's `sem_ver` reads them: SemVer 2.0 precedence, with a
//! leading `v` or `V` dropped and partial versions (`1`, `1.2`) completed with
//! zeroes; anything else is not a version. Parsing borrows the pre-release part, so
//! comparing a context's version allocates nothing.

use std::cmp::Ordering;

/// Longest version text accepted, as the `semver` package flagd's evaluators use.
const MAX_LENGTH: usize = 256;
/// Largest version number accepted (JavaScript's largest safe integer).
const MAX_NUMBER: u64 = (1 << 53) - 1;

/// A parsed version; `pre` is the pre-release part without its `-` ("" if none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemVer<'a> {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: &'a str,
}

impl<'a> SemVer<'a> {
    /// Parses `text` leniently, as flagd does; `None` when it is not a version.
    pub fn parse(text: &'a str) -> Option<Self> {
        let text = text.strip_prefix(['v', 'V']).unwrap_or(text);
        if let Some(v) = Self::strict(text) {
            return Some(v);
        }
        partial(text)
    }

    /// `major.minor.patch[-pre][+build]`, surrounding spaces and one `v` allowed.
    fn strict(text: &'a str) -> Option<Self> {
        if text.len() > MAX_LENGTH {
            return None;
        }
        let text = text.trim();
        let text = text.strip_prefix('v').unwrap_or(text);
        let (rest, build) = match text.split_once('+') {
            Some((rest, build)) => (rest, Some(build)),
            None => (text, None),
        };
        if let Some(build) = build
            && !build
                .split('.')
                .all(|id| !id.is_empty() && id.bytes().all(is_ident_byte))
        {
            return None;
        }
        let (main, pre) = match rest.split_once('-') {
            Some((main, pre)) => (main, pre),
            None => (rest, ""),
        };
        if rest.len() > main.len() && !pre.split('.').all(valid_pre_identifier) {
            return None;
        }
        let mut numbers = main.split('.');
        let major = number(numbers.next()?)?;
        let minor = number(numbers.next()?)?;
        let patch = number(numbers.next()?)?;
        if numbers.next().is_some() {
            return None;
        }
        Some(Self {
            major,
            minor,
            patch,
            pre,
        })
    }

    /// SemVer 2.0 precedence (build metadata ignored).
    pub fn compare(&self, other: &SemVer<'_>) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| compare_pre(self.pre, other.pre))
    }
}

/// `1` or `1.2` (digits only), completed with zeroes.
fn partial(text: &str) -> Option<SemVer<'_>> {
    let (major, minor) = match text.split_once('.') {
        Some((major, minor)) => (major, Some(minor)),
        None => (text, None),
    };
    let digits = |s: &str| -> Option<u64> {
        // The `semver` package's coercion reads at most 16 digits per part.
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok().filter(|&n| n <= MAX_NUMBER)
    };
    Some(SemVer {
        major: digits(major)?,
        minor: match minor {
            Some(m) => digits(m)?,
            None => 0,
        },
        patch: 0,
        pre: "",
    })
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// A version number: digits without a leading zero.
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if text.len() > 1 && text.starts_with('0') {
        return None;
    }
    text.parse().ok().filter(|&n| n <= MAX_NUMBER)
}

fn valid_pre_identifier(id: &str) -> bool {
    if id.is_empty() || !id.bytes().all(is_ident_byte) {
        return false;
    }
    let numeric = id.bytes().all(|b| b.is_ascii_digit());
    !(numeric && id.len() > 1 && id.starts_with('0'))
}

fn compare_pre(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        // A pre-release comes before its release.
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = compare_identifier(x, y);
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

fn compare_identifier(x: &str, y: &str) -> Ordering {
    let numeric = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    match (numeric(x), numeric(y)) {
        // Without leading zeroes, a longer number is a larger one.
        (true, true) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x.cmp(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> SemVer<'_> {
        SemVer::parse(text).unwrap_or_else(|| panic!("{text:?} should parse"))
    }

    #[test]
    fn lenient_forms_parse_as_flagd_reads_them() {
        assert_eq!(v("v1.2.3"), v("1.2.3"));
        assert_eq!(v("V1.2.3"), v("1.2.3"));
        assert_eq!(v("1"), v("1.0.0"));
        assert_eq!(v("1.2"), v("1.2.0"));
        assert_eq!(v(" 1.2.3 "), v("1.2.3"));
        assert_eq!(v("1.2.3+build.5").pre, "");
        assert_eq!(v("1.2.3-rc.1+b").pre, "rc.1");
        for bad in [
            "", "x", "1.2.3.4", "01.2.3", "1.2.3-", "1.2.3-01", "1.2.3+", "1.2.", "v", "1.x", "-1",
        ] {
            assert_eq!(SemVer::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn precedence_follows_semver_2() {
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "2.0.0",
            "10.0.0",
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(v(a).compare(&v(b)), i.cmp(&j), "{a} vs {b}");
            }
        }
        assert_eq!(v("1.0.0+a").compare(&v("1.0.0+b")), Ordering::Equal);
    }
}
