//! THE table of named formats, the short aliases, and the `eXmY` spec grammar.
//!
//! One table drives names everywhere (Rust, Python, tests): `parse(name(f)) == f`.
//!
//! Spec grammar (lower case, no spaces):
//! ```text
//! e<X>m<Y>[b<bias>][ieee|fn|fnuz|f|infuz|infn][u][ns]
//!   ieee (or nothing)  inf and NaN in the all-ones exponent (IEEE 754 style)
//!   fn                 finite, NaN = the all-ones code (OCP E4M3 style)
//!   fnuz               finite, NaN = 1000…0, no −0; default bias 2^(X-1) (one more than IEEE)
//!   f                  finite, no NaN at all (every code a number)
//!   infuz              as fnuz, and ±inf = the all-ones magnitude (P3109 signed extended)
//!   infn               as fn, and ±inf = the code below it (P3109 unsigned extended)
//!   u                  unsigned (no sign bit)
//!   ns                 no subnormals: exponent field 0 is a normal binade, no zero
//!   b<bias>            explicit bias (may be negative: b-3); default 2^(X-1)-1
//! ```
//!
//! IEEE P3109 formats (interim report; the names gfloat's `format_info_p3109` gives):
//! ```text
//! p3109_k<K>p<P>[s|u][e|f]   or   binary<K>p<P>[s|u][e|f]
//!   K bits, precision P (P - 1 mantissa bits), s signed (default) / u unsigned,
//!   e extended: with ±inf (default) / f finite; bias 2^(K-P-1) signed, 2^(K-P) unsigned;
//!   signed: 0x00 = 0, 10…0 = NaN, 01…1 / 11…1 = ±inf (extended); unsigned: 1…1 = NaN,
//!   1…10 = +inf (extended). Subnormals always.
//! ```
//! The extended ones are named `p3109_k<K>p<P>se` / `…ue`; a finite one is the same format
//! as an existing spec (`p3109_k8p4sf` is `float8_e4m3fnuz`) and keeps that name.
//!
//! The OCP short aliases `e4m3`, `e2m1`, `e2m3`, `e3m2`, `e8m0` name the OCP formats
//! (float8_e4m3fn, float4_e2m1fn, …), not the IEEE-style spec of the same letters; the
//! IEEE-style one is spelled with `ieee` (e.g. `e2m1ieee`) or by its ml_dtypes name.

use crate::error::{Error, Result};
use crate::format::{Format, NanKind};

/// Named formats, in display order. Names and encodings follow ml_dtypes.
/// name, exp_bits, man_bits, bias, signed, inf, nan, subnormals
type Entry = (&'static str, u32, u32, i32, bool, bool, NanKind, bool);

const NAMED: &[Entry] = &[
    // name, exp, man, bias, signed, inf, nan, subnormals
    ("float8_e4m3fn", 4, 3, 7, true, false, NanKind::Max, true),
    ("float8_e4m3", 4, 3, 7, true, true, NanKind::Ieee, true),
    ("float8_e5m2", 5, 2, 15, true, true, NanKind::Ieee, true),
    ("float8_e4m3fnuz", 4, 3, 8, true, false, NanKind::NegZero, true),
    ("float8_e5m2fnuz", 5, 2, 16, true, false, NanKind::NegZero, true),
    ("float8_e4m3b11fnuz", 4, 3, 11, true, false, NanKind::NegZero, true),
    ("float8_e3m4", 3, 4, 3, true, true, NanKind::Ieee, true),
    ("float8_e8m0fnu", 8, 0, 127, false, false, NanKind::Max, false),
    ("float6_e2m3fn", 2, 3, 1, true, false, NanKind::None, true),
    ("float6_e3m2fn", 3, 2, 3, true, false, NanKind::None, true),
    ("float4_e2m1fn", 2, 1, 1, true, false, NanKind::None, true),
    ("bfloat16", 8, 7, 127, true, true, NanKind::Ieee, true),
    ("float16", 5, 10, 15, true, true, NanKind::Ieee, true),
    ("float32", 8, 23, 127, true, true, NanKind::Ieee, true),
];

/// Short aliases → named format.
const ALIASES: &[(&str, &str)] = &[
    ("e4m3", "float8_e4m3fn"),
    ("e5m2", "float8_e5m2"),
    ("e2m1", "float4_e2m1fn"),
    ("e2m3", "float6_e2m3fn"),
    ("e3m2", "float6_e3m2fn"),
    ("e8m0", "float8_e8m0fnu"),
    ("e8m0fnu", "float8_e8m0fnu"),
    ("fp8", "float8_e4m3fn"),
    ("fp8_e4m3", "float8_e4m3fn"),
    ("fp8_e5m2", "float8_e5m2"),
    ("fp6", "float6_e2m3fn"),
    ("fp6_e2m3", "float6_e2m3fn"),
    ("fp6_e3m2", "float6_e3m2fn"),
    ("fp4", "float4_e2m1fn"),
    ("fp4_e2m1", "float4_e2m1fn"),
    ("bf16", "bfloat16"),
    ("fp16", "float16"),
    ("half", "float16"),
    ("fp32", "float32"),
    ("float", "float32"),
];

fn named(entry: &Entry) -> Format {
    let &(_, e, m, b, s, i, n, sub) = entry;
    Format::new(e, m, b, s, i, n, sub).expect("the named format table is valid")
}

/// All named formats with their names, in display order.
pub fn all() -> Vec<(&'static str, Format)> {
    NAMED.iter().map(|e| (e.0, named(e))).collect()
}

/// The short aliases and the named format each one stands for.
pub fn aliases() -> &'static [(&'static str, &'static str)] {
    ALIASES
}

/// Parse a format name: a named format, an alias, or an `eXmY…` spec.
pub fn parse(name: &str) -> Result<Format> {
    let s = name.trim().to_ascii_lowercase();
    if let Some(e) = NAMED.iter().find(|e| e.0 == s) {
        return Ok(named(e));
    }
    if let Some((_, target)) = ALIASES.iter().find(|(a, _)| *a == s) {
        return parse(target);
    }
    if let Some(r) = parse_p3109(&s) {
        return r.map_err(|msg| {
            Error::value(
                "fmt",
                format!(
                    "unknown format {name:?}: {msg}; a P3109 format is \
                     'p3109_k<K>p<P>[s|u][e|f]' or 'binary<K>p<P>[s|u][e|f]'"
                ),
            )
        })?;
    }
    parse_spec(&s).map_err(|msg| {
        Error::value(
            "fmt",
            format!(
                "unknown format {name:?}: {msg}; expected a name from lowfp.formats() \
                 (e.g. 'float8_e4m3fn', 'bfloat16'), an alias ('e4m3', 'fp4', 'bf16', …) \
                 a spec 'e<X>m<Y>[b<bias>][ieee|fn|fnuz|f|infuz|infn][u][ns]' \
                 or a P3109 name 'p3109_k<K>p<P>[s|u][e|f]'"
            ),
        )
    })?
}

/// Split "digits" off the front of `s`.
fn take_int(s: &str) -> (Option<i64>, &str) {
    let neg = s.starts_with('-');
    let body = if neg { &s[1..] } else { s };
    let n = body.bytes().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 6 {
        return (None, s);
    }
    let v: i64 = body[..n].parse().ok().unwrap_or(0);
    (Some(if neg { -v } else { v }), &body[n..])
}

/// Parse the spec grammar. The outer `Err(String)` is a grammar error; the inner
/// `Result` carries the field validation of `Format::new`.
fn parse_spec(s: &str) -> std::result::Result<Result<Format>, String> {
    let rest = s.strip_prefix('e').ok_or("a spec starts with 'e'")?;
    let (x, rest) = take_int(rest);
    let x = x.ok_or("missing exponent bits after 'e'")?;
    let rest = rest.strip_prefix('m').ok_or("missing 'm'")?;
    let (y, mut rest) = take_int(rest);
    let y = y.ok_or("missing mantissa bits after 'm'")?;
    let mut bias = None;
    if let Some(r) = rest.strip_prefix('b') {
        let (b, r) = take_int(r);
        bias = Some(b.ok_or("missing bias after 'b'")?);
        rest = r;
    }
    // "fns" is "f" + "ns", not "fn" + "s": try each variant and keep the first whose
    // remainder is a valid tail.
    let (variant, signed, subnormals) = ["ieee", "infuz", "infn", "fnuz", "fn", "f", ""]
        .iter()
        .find_map(|v| {
            let tail = rest.strip_prefix(v)?;
            let (signed, tail) = match tail.strip_prefix('u') {
                Some(t) => (false, t),
                None => (true, tail),
            };
            match tail {
                "" => Some((*v, signed, true)),
                "ns" => Some((*v, signed, false)),
                _ => None,
            }
        })
        .ok_or_else(|| format!("unexpected {rest:?} after e{x}m{y}"))?;
    if !(0..=64).contains(&x) || !(0..=64).contains(&y) {
        return Err("exponent/mantissa bits out of range".into());
    }
    let (inf, nan) = variant_fields(variant);
    let bias = bias.unwrap_or_else(|| default_bias(x as u32, nan) as i64);
    if !(-1000..=1000).contains(&bias) {
        return Err(format!("bias {bias} out of range"));
    }
    Ok(Format::new(x as u32, y as u32, bias as i32, signed, inf, nan, subnormals))
}

/// A P3109 name (`p3109_k8p4`, `binary8p4se`, …): None when `s` is not one; the outer
/// `Err(String)` is a grammar error, the inner `Result` the field validation.
fn parse_p3109(s: &str) -> Option<std::result::Result<Result<Format>, String>> {
    let rest = s.strip_prefix("p3109_k").or_else(|| s.strip_prefix("binary"))?;
    Some((|| {
        let (k, rest) = take_int(rest);
        let k = k.ok_or("missing the width K")?;
        let rest = rest.strip_prefix('p').ok_or("missing 'p' after the width")?;
        let (p, rest) = take_int(rest);
        let p = p.ok_or("missing the precision P after 'p'")?;
        let (signed, extended) = match rest {
            "" | "s" | "e" | "se" => (true, true),
            "sf" | "f" => (true, false),
            "u" | "ue" => (false, true),
            "uf" => (false, false),
            r => return Err(format!("unexpected {r:?} after k{k}p{p}")),
        };
        if !(2..=32).contains(&k) || !(1..=k).contains(&p) || (signed && p == k) {
            return Err(format!(
                "P3109 needs 2 <= K and 1 <= P <= K (P < K when signed), got K={k}, P={p}"
            ));
        }
        let exp_bits = (k - p + !signed as i64) as u32; // the sign bit takes one
        let nan = if signed { NanKind::NegZero } else { NanKind::Max };
        let bias = 1i32 << (exp_bits - 1).min(30);
        Ok(Format::new(exp_bits, (p - 1) as u32, bias, signed, extended, nan, true))
    })())
}

/// The P3109 name of an extended P3109 format (see the module docs), else None.
fn p3109_name(f: &Format) -> Option<String> {
    let p3109_nan = if f.signed() { NanKind::NegZero } else { NanKind::Max };
    if !f.inf() || f.nan() != p3109_nan || !f.subnormals() || f.bias() != 1 << (f.exp_bits() - 1) {
        return None;
    }
    let (k, p) = (f.bits(), f.man_bits() + 1);
    Some(format!("p3109_k{k}p{p}{}e", if f.signed() { "s" } else { "u" }))
}

fn variant_fields(variant: &str) -> (bool, NanKind) {
    match variant {
        "infuz" => (true, NanKind::NegZero),
        "infn" => (true, NanKind::Max),
        "fn" => (false, NanKind::Max),
        "fnuz" => (false, NanKind::NegZero),
        "f" => (false, NanKind::None),
        _ => (true, NanKind::Ieee),
    }
}

fn default_bias(exp_bits: u32, nan: NanKind) -> i32 {
    // the shift is capped: a spec such as "e33m2" must reach Format::new's exp_bits error,
    // not overflow here (found by the format_spec fuzz target)
    let ieee = (1i32 << exp_bits.saturating_sub(1).min(9)) - 1;
    if nan == NanKind::NegZero {
        ieee + 1
    } else {
        ieee
    }
}

/// The canonical name: the ml_dtypes-style name of a named format, else its spec.
pub fn name(f: &Format) -> String {
    if let Some(e) = NAMED.iter().find(|e| named(e) == *f) {
        return e.0.to_string();
    }
    if let Some(n) = p3109_name(f) {
        return n;
    }
    let variant = match (f.nan(), f.inf()) {
        (NanKind::Ieee, _) => "",
        (NanKind::Max, false) => "fn",
        (NanKind::NegZero, false) => "fnuz",
        (NanKind::Max, true) => "infn",
        (NanKind::NegZero, true) => "infuz",
        (NanKind::None, _) => "f",
    };
    let mut s = format!("e{}m{}", f.exp_bits(), f.man_bits());
    if f.bias() != default_bias(f.exp_bits(), f.nan()) {
        s += &format!("b{}", f.bias());
    }
    let tail =
        format!("{}{}", if f.signed() { "" } else { "u" }, if f.subnormals() { "" } else { "ns" });
    if variant.is_empty() && tail.is_empty() && ALIASES.iter().any(|(a, _)| *a == s) {
        s += "ieee"; // `e2m1` alone would mean the OCP alias
    }
    let full = s + variant + &tail;
    if ALIASES.iter().any(|(a, _)| *a == full) {
        // the spec spells an alias of another format ("e8m0fnu" is float8_e8m0fnu, which
        // has no subnormals): write the bias out (found by the format_spec fuzz target)
        return format!("e{}m{}b{}{variant}{tail}", f.exp_bits(), f.man_bits(), f.bias());
    }
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_name_roundtrip_named() {
        for (n, f) in all() {
            assert_eq!(name(&f), n);
            assert_eq!(parse(n).unwrap(), f);
        }
        for (a, n) in aliases() {
            assert_eq!(parse(a).unwrap(), parse(n).unwrap(), "{a}");
        }
    }

    #[test]
    fn spec_matches_named() {
        for n in [
            "e4m3fn",
            "e5m2",
            "e4m3fnuz",
            "e5m2fnuz",
            "e4m3b11fnuz",
            "e3m4",
            "e2m3f",
            "e3m2f",
            "e2m1f",
        ] {
            let f = parse(n).unwrap();
            assert!(all().iter().any(|(_, g)| *g == f), "{n}");
        }
        assert_eq!(parse("e8m0fnuns").unwrap(), parse("float8_e8m0fnu").unwrap());
        assert_eq!(parse("e5m10").unwrap(), parse("float16").unwrap());
    }

    #[test]
    fn parse_name_roundtrip_generic() {
        let mut n = 0;
        for x in 1..=8 {
            for y in 0..=23 {
                for b in [-3, 0, 1, 7, 20] {
                    for (inf, nan) in [
                        (true, NanKind::Ieee),
                        (false, NanKind::Max),
                        (false, NanKind::NegZero),
                        (false, NanKind::None),
                        (true, NanKind::Max),
                        (true, NanKind::NegZero),
                    ] {
                        for signed in [true, false] {
                            for sub in [true, false] {
                                if let Ok(f) = Format::new(x, y, b, signed, inf, nan, sub) {
                                    assert_eq!(parse(&name(&f)).unwrap(), f, "{}", name(&f));
                                    n += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(n > 1000);
        assert_eq!(name(&parse("e2m1ieee").unwrap()), "e2m1ieee");
    }

    #[test]
    fn p3109_names() {
        let f = parse("p3109_k8p4").unwrap();
        assert_eq!(f, Format::new(4, 3, 8, true, true, NanKind::NegZero, true).unwrap());
        assert_eq!(name(&f), "p3109_k8p4se");
        assert_eq!(parse("binary8p4").unwrap(), f);
        assert_eq!(parse("e4m3infuz").unwrap(), f);
        // the finite variant is the existing fnuz format
        assert_eq!(name(&parse("p3109_k8p4sf").unwrap()), "float8_e4m3fnuz");
        assert_eq!(name(&parse("p3109_k8p3sf").unwrap()), "float8_e5m2fnuz");
        let u = parse("p3109_k8p4ue").unwrap();
        assert_eq!(u, Format::new(5, 3, 16, false, true, NanKind::Max, true).unwrap());
        assert_eq!(name(&u), "p3109_k8p4ue");
        let p1 = parse("p3109_k8p1").unwrap();
        assert_eq!((p1.exp_bits(), p1.man_bits(), p1.bias()), (7, 0, 64));
        for k in 2..=16u32 {
            for p in 1..=k {
                for tail in ["se", "sf", "ue", "uf"] {
                    let n = format!("p3109_k{k}p{p}{tail}");
                    if let Ok(f) = parse(&n) {
                        assert_eq!(parse(&name(&f)).unwrap(), f, "{n}");
                        assert_eq!(f.bits(), k, "{n}");
                    } else {
                        let signed = tail.starts_with('s');
                        let exp_bits = k - p + !signed as u32;
                        assert!(signed && p == k || exp_bits > 8, "{n}");
                    }
                }
            }
        }
        for bad in ["p3109_k8p9", "p3109_k8p8", "p3109_k1p1", "p3109_k8", "p3109_k8p4x"] {
            assert_eq!(parse(bad).unwrap_err().arg, "fmt", "{bad}");
        }
    }

    #[test]
    fn parse_errors() {
        for bad in ["", "e4", "e4m", "x4m3", "e4m3zz", "e9m3", "e4m30", "float7", "e4m3b"] {
            let err = parse(bad).unwrap_err();
            assert!(
                err.arg == "fmt" || err.arg == "exp_bits" || err.arg == "man_bits",
                "{bad}: {err}"
            );
        }
        assert_eq!(parse("e4m3fnuzu").unwrap_err().arg, "nan");
    }
}
