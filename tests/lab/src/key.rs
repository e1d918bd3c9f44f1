//! Which lab a mystery seed hides, so that only the holder of the class secret can list the
//! answer key: the lab is chosen by an HMAC-SHA-256 of the seed keyed with the secret.
//!
//! The teacher keeps the secret and runs `lab key`, which prints, for each seed, the lab and
//! a *code*: the seed and the first 4 bytes of that HMAC, plus one check byte against typos.
//! Students start the lab from the code (`lab start --mystery --code …`); a code names one
//! seed's lab and nothing about any other, and without the secret no code can be made.
//! The teacher (or a student working alone, with a secret of their own) may also start from
//! the seed and the secret directly: both ways pick the same lab.
//!
//! What this is not: a code holds its lab in the open for anyone who reads this file (the
//! lab is the code's 4 bytes modulo 7). Sealing keeps the answer out of everything a student
//! looks at while diagnosing; it cannot keep it from someone who reads the source or runs a
//! debugger on their own machine.

use sha2::{Digest as _, Sha256};

use crate::{SCENARIOS, Scenario};

/// A class secret shorter than this is refused: a guessable secret lists the key.
pub const MIN_SECRET_LEN: usize = 8;

/// Bytes of the HMAC a code carries.
const CODE_BYTES: usize = 4;

/// HMAC-SHA-256 (RFC 2104) of `message` keyed with `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A mystery lab's code: its seed, and the bytes of the keyed hash that pick the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    /// The seed the teacher handed out.
    pub seed: u64,
    mac: [u8; CODE_BYTES],
}

impl Code {
    /// The code of `seed` under the class secret `secret` (checked with [`check_secret`]).
    pub fn new(secret: &str, seed: u64) -> Self {
        let full = hmac_sha256(
            secret.as_bytes(),
            format!("first-distributed-system lab seed {seed}").as_bytes(),
        );
        let mut mac = [0u8; CODE_BYTES];
        mac.copy_from_slice(&full[..CODE_BYTES]);
        Self { seed, mac }
    }

    /// A code of its own for a random mystery (`lab start --mystery` without a code or a
    /// seed): from a random seed and a random secret nobody keeps, so no key lists it.
    pub fn random() -> Self {
        let secret = format!("{:032x}", fastrand::u128(..));
        Self::new(&secret, fastrand::u64(..1_000_000))
    }

    /// Whether this code is the one the class secret `secret` makes for its seed: `lab
    /// report` checks each record's code so.
    pub fn is_of(&self, secret: &str) -> bool {
        *self == Self::new(secret, self.seed)
    }

    /// The lab this code starts.
    pub fn lab(&self) -> &'static Scenario {
        let n = u32::from_be_bytes(self.mac) as usize;
        &SCENARIOS[n % SCENARIOS.len()]
    }

    /// Reads a code as `lab key` prints it, `<seed>-<8 hex digits><2 hex digits of check>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{text:?} is not a lab code (they look like 42-0123abcd9e: the seed, a dash, 10 hex digits)"
            )
        };
        let (seed, rest) = text.trim().split_once('-').ok_or_else(bad)?;
        let seed: u64 = seed.parse().map_err(|_| bad())?;
        if rest.len() != 2 * CODE_BYTES + 2 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let byte = |i: usize| u8::from_str_radix(&rest[2 * i..2 * i + 2], 16).map_err(|_| bad());
        let mut mac = [0u8; CODE_BYTES];
        for (i, b) in mac.iter_mut().enumerate() {
            *b = byte(i)?;
        }
        let code = Self { seed, mac };
        if byte(CODE_BYTES)? != code.check() {
            return Err(format!(
                "{text:?} has a typo (its check digits do not match): copy the code again"
            ));
        }
        Ok(code)
    }

    /// One byte that catches a mistyped code: not secret, only a checksum.
    fn check(&self) -> u8 {
        Sha256::digest(format!("{}-{}", self.seed, hex(&self.mac)).as_bytes())[0]
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}{:02x}", self.seed, hex(&self.mac), self.check())
    }
}

/// Refuses an empty or short class secret.
pub fn check_secret(secret: &str) -> Result<(), String> {
    if secret.chars().count() < MIN_SECRET_LEN {
        return Err(format!(
            "the class secret must be at least {MIN_SECRET_LEN} characters: anyone who guesses it can list the answer key"
        ));
    }
    Ok(())
}

/// Seeds from `1-30`, `42` or `1-5,9` (at most 10,000 in all).
pub fn parse_seeds(text: &str) -> Result<Vec<u64>, String> {
    let mut seeds = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("{part:?}: a seed is a whole number, a range is like 1-30");
        let (from, to) = match part.split_once('-') {
            Some((from, to)) => (
                from.trim().parse::<u64>().map_err(|_| bad())?,
                to.trim().parse::<u64>().map_err(|_| bad())?,
            ),
            None => {
                let seed = part.parse::<u64>().map_err(|_| bad())?;
                (seed, seed)
            }
        };
        if from > to || to - from >= 10_000 || seeds.len() as u64 + (to - from) >= 10_000 {
            return Err(format!(
                "{part:?}: at most 10000 seeds, in increasing order"
            ));
        }
        seeds.extend(from..=to);
    }
    if seeds.is_empty() {
        return Err("no seed given".into());
    }
    Ok(seeds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231, test cases 1 and 2.
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_code_round_trips_and_picks_the_same_lab_as_the_secret() {
        for seed in 0..50 {
            let code = Code::new("a class secret", seed);
            let parsed = Code::parse(&code.to_string()).expect("parses");
            assert_eq!(parsed, code);
            assert_eq!(parsed.lab().name, code.lab().name);
        }
    }

    #[test]
    fn a_code_is_of_the_secret_that_made_it_only() {
        let code = Code::new("a class secret", 42);
        assert!(code.is_of("a class secret"));
        assert!(!code.is_of("another class secret"));
        let random = Code::random();
        assert!(Code::parse(&random.to_string()).is_ok_and(|c| c == random));
    }

    #[test]
    fn every_lab_is_reachable_and_the_secret_matters() {
        let labs = |secret: &str| -> Vec<&str> {
            (0..60)
                .map(|seed| Code::new(secret, seed).lab().name)
                .collect()
        };
        let one = labs("the first secret");
        for scenario in &SCENARIOS {
            assert!(one.contains(&scenario.name), "{}", scenario.name);
        }
        assert_ne!(one, labs("the other secret"));
    }

    #[test]
    fn a_mistyped_code_is_refused() {
        let code = Code::new("a class secret", 42).to_string();
        let mut typo = code.clone().into_bytes();
        let last = typo.len() - 3;
        typo[last] = if typo[last] == b'0' { b'1' } else { b'0' };
        let typo = String::from_utf8(typo).expect("ascii");
        assert!(Code::parse(&typo).is_err(), "{typo}");
        for bad in [
            "",
            "42",
            "42-",
            "x-0123456789",
            "42-012345678",
            "42-zz23456789",
        ] {
            assert!(Code::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seeds_and_secrets_are_checked() {
        assert_eq!(parse_seeds("1-3, 7").expect("parses"), vec![1, 2, 3, 7]);
        assert!(parse_seeds("3-1").is_err());
        assert!(parse_seeds("0-20000").is_err());
        assert!(parse_seeds("x").is_err());
        assert!(parse_seeds("").is_err());
        assert!(check_secret("short").is_err());
        assert!(check_secret("long enough").is_ok());
    }
}
