//! GS1 identifiers as EPCIS carries them: EPC URNs (`urn:epc:id:sgtin:...`, `urn:epc:class:lgtin:...`,
//! `urn:epc:idpat:sgtin:...*`, `urn:epc:id:sgln:...`) and GS1 Digital Link URIs
//! (`https://id.gs1.org/01/...`, any host). Two uses: the GTIN-14 of a class and the GLN (+ extension)
//! of a location, to look up `[[items]] gtin` / `[[locations]] sgln`; and the canonical Digital Link
//! form the event hash is computed over.

/// The GS1 standard check digit (GenSpecs 7.9.1) of `digits` (the key without its check digit).
pub fn check_digit(digits: &str) -> u8 {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A GTIN of 8, 12, 13 or 14 digits with a correct check digit, as GTIN-14.
pub fn gtin14(s: &str) -> Result<String, String> {
    if !all_digits(s) || ![8, 12, 13, 14].contains(&s.len()) {
        return Err(format!("`{s}` is not a GTIN (8, 12, 13 or 14 digits)"));
    }
    let padded = format!("{s:0>14}");
    let want = check_digit(&padded[..13]);
    if padded.as_bytes()[13] - b'0' != want {
        return Err(format!(
            "GTIN `{s}` has a wrong check digit (expected {want})"
        ));
    }
    Ok(padded)
}

/// `CP.REF` of an EPC URN body: the company prefix (6..=12 digits) and a digit reference whose
/// lengths add up to `total`.
fn prefix_and_ref(cp: &str, reference: &str, total: usize) -> bool {
    all_digits(cp)
        && (6..=12).contains(&cp.len())
        && reference.bytes().all(|b| b.is_ascii_digit())
        && cp.len() + reference.len() == total
}

/// GTIN-14 from a company prefix and an item reference whose first digit is the indicator.
fn gtin_from_parts(cp: &str, item_ref: &str) -> String {
    let body = format!("{}{cp}{}", &item_ref[..1], &item_ref[1..]);
    format!("{body}{}", check_digit(&body))
}

/// The GTIN-14 an `epcClass` (or an SGTIN instance EPC) names: LGTIN class, SGTIN pattern, SGTIN,
/// or a Digital Link with AI 01 on any host.
pub fn gtin_of(class: &str) -> Result<String, String> {
    let s = class.trim();
    for prefix in [
        "urn:epc:class:lgtin:",
        "urn:epc:idpat:sgtin:",
        "urn:epc:id:sgtin:",
    ] {
        if let Some(rest) = s.strip_prefix(prefix) {
            let mut parts = rest.splitn(3, '.');
            let (cp, item, tail) = (parts.next(), parts.next(), parts.next());
            return match (cp, item, tail) {
                (Some(cp), Some(item), Some(tail))
                    if prefix_and_ref(cp, item, 13) && !tail.is_empty() =>
                {
                    if prefix == "urn:epc:idpat:sgtin:" && tail != "*" {
                        return Err(format!(
                            "`{s}`: an SGTIN pattern names a class only with `*` as serial"
                        ));
                    }
                    Ok(gtin_from_parts(cp, item))
                }
                _ => Err(format!(
                    "`{s}` is not a well-formed {} (company prefix and item reference of 13 digits together)",
                    prefix.trim_end_matches(':')
                )),
            };
        }
    }
    if let Some(path) = dl_path(s) {
        let segs: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        if let Some(i) = segs.iter().position(|p| *p == "01" || *p == "gtin")
            && let Some(g) = segs.get(i + 1)
        {
            return gtin14(g);
        }
        return Err(format!("`{s}` is a URI without a GTIN (AI 01)"));
    }
    Err(format!(
        "`{s}` is neither an LGTIN, an SGTIN (pattern) nor a GS1 Digital Link with a GTIN"
    ))
}

/// The path of an http(s) URI, without query or fragment.
fn dl_path(s: &str) -> Option<&str> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))?;
    let path = &rest[rest.find('/')?..];
    let end = path.find(['?', '#']).unwrap_or(path.len());
    Some(&path[..end])
}

/// A location identifier: the GLN-13 and its extension (`None` for none, which the URN writes `0`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Gln {
    pub gln: String,
    pub extension: Option<String>,
}

/// The GLN of an SGLN URN or a Digital Link with AI 414 (and 254); `None` if it is neither.
pub fn gln_of(id: &str) -> Option<Gln> {
    let s = id.trim();
    if let Some(rest) = s.strip_prefix("urn:epc:id:sgln:") {
        let mut parts = rest.splitn(3, '.');
        let (cp, lr, ext) = (parts.next()?, parts.next()?, parts.next()?);
        if !prefix_and_ref(cp, lr, 12) || ext.is_empty() {
            return None;
        }
        let body = format!("{cp}{lr}");
        return Some(Gln {
            gln: format!("{body}{}", check_digit(&body)),
            extension: (ext != "0").then(|| ext.to_owned()),
        });
    }
    let path = dl_path(s)?;
    let segs: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let i = segs.iter().position(|p| *p == "414" || *p == "gln")?;
    let gln = segs.get(i + 1)?;
    if gln.len() != 13 || !all_digits(gln) || gln.as_bytes()[12] - b'0' != check_digit(&gln[..12]) {
        return None;
    }
    let extension = match (segs.get(i + 2), segs.get(i + 3)) {
        (Some(&"254"), Some(e)) => Some((*e).to_owned()),
        _ => None,
    };
    Some(Gln {
        gln: (*gln).to_owned(),
        extension,
    })
}

/// Characters the Digital Link standard wants percent-encoded, as the reference hash generator
/// encodes them when it turns an EPC URN into a Digital Link.
fn percent(s: &str) -> String {
    s.replace('!', "%21")
        .replace('(', "%28")
        .replace(')', "%29")
        .replace('*', "%2A")
        .replace('+', "%2B")
        .replace(',', "%2C")
        .replace(':', "%3A")
}

/// An EPC URN body `CP.REF.TAIL` split, with the lengths checked.
fn split3(rest: &str, total: usize) -> Option<(&str, &str, &str)> {
    let mut p = rest.splitn(3, '.');
    let (cp, r, t) = (p.next()?, p.next()?, p.next()?);
    prefix_and_ref(cp, r, total).then_some((cp, r, t))
}

fn split2(rest: &str) -> Option<(&str, &str)> {
    let (cp, r) = rest.split_once('.')?;
    (all_digits(cp) && (6..=12).contains(&cp.len())).then_some((cp, r))
}

fn with_check(body: &str) -> String {
    format!("{body}{}", check_digit(body))
}

/// The canonical GS1 Digital Link (on `id.gs1.org`, numeric AIs, most specific key, no query) of
/// an identifier, or `None` when it names no GS1 key. This follows the reference event-hash
/// generator's normaliser, so that hashes agree with it.
pub fn canonical_dl(uri: &str) -> Option<String> {
    const DL: &str = "https://id.gs1.org/";
    if !uri.contains('.') {
        return None;
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:id:sgtin:") {
        let (cp, r, ser) = split3(rest, 13)?;
        return Some(format!(
            "{DL}01/{}/21/{}",
            gtin_from_parts(cp, r),
            percent(ser)
        ));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:id:sscc:") {
        let (cp, r) = split2(rest)?;
        if !all_digits(r) || cp.len() + r.len() != 17 {
            return None;
        }
        return Some(format!(
            "{DL}00/{}",
            with_check(&format!("{}{cp}{}", &r[..1], &r[1..]))
        ));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:id:sgln:") {
        let (cp, r, ext) = split3(rest, 12)?;
        let gln = with_check(&format!("{cp}{r}"));
        return Some(if ext == "0" {
            format!("{DL}414/{gln}")
        } else {
            format!("{DL}414/{gln}/254/{}", percent(ext))
        });
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:id:grai:") {
        let (cp, r, ser) = split3(rest, 12)?;
        return Some(format!(
            "{DL}8003/{}{}",
            with_check(&format!("0{cp}{r}")),
            percent(ser)
        ));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:id:giai:") {
        let (cp, r) = split2(rest)?;
        return Some(format!("{DL}8004/{cp}{}", percent(r)));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:id:gsrn:") {
        let (cp, r) = split2(rest)?;
        return (all_digits(r) && cp.len() + r.len() == 17)
            .then(|| format!("{DL}8018/{}", with_check(&format!("{cp}{r}"))));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:id:gsrnp:") {
        let (cp, r) = split2(rest)?;
        return (all_digits(r) && cp.len() + r.len() == 17)
            .then(|| format!("{DL}8017/{}", with_check(&format!("{cp}{r}"))));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:id:gdti:") {
        let (cp, r, ser) = split3(rest, 12)?;
        return Some(format!(
            "{DL}253/{}{}",
            with_check(&format!("{cp}{r}")),
            percent(ser)
        ));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:id:pgln:") {
        let (cp, r) = split2(rest)?;
        return (r.bytes().all(|b| b.is_ascii_digit()) && cp.len() + r.len() == 12)
            .then(|| format!("{DL}417/{}", with_check(&format!("{cp}{r}"))));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:id:itip:") {
        let (cp, r, tail) = split3(rest, 13)?;
        let mut t = tail.splitn(3, '.');
        let (piece, total, ser) = (t.next()?, t.next()?, t.next()?);
        return Some(format!(
            "{DL}8006/{}{piece}{total}/21/{}",
            gtin_from_parts(cp, r),
            percent(ser)
        ));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:id:upui:") {
        let (cp, r, ser) = split3(rest, 13)?;
        return Some(format!(
            "{DL}01/{}/235/{}",
            gtin_from_parts(cp, r),
            percent(ser)
        ));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:id:sgcn:") {
        let (cp, r, ser) = split3(rest, 12)?;
        return Some(format!("{DL}255/{}{ser}", with_check(&format!("{cp}{r}"))));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:idpat:cpi:") {
        let (cp, r) = split2(rest)?;
        let cpref = r.strip_suffix(".*")?;
        return Some(format!("{DL}8010/{}", percent(&format!("{cp}{cpref}"))));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:idpat:itip:") {
        let (cp, r, tail) = split3(rest, 13)?;
        let mut t = tail.splitn(3, '.');
        let (piece, total, star) = (t.next()?, t.next()?, t.next()?);
        return (star == "*").then(|| format!("{DL}8006/{}{piece}{total}", gtin_from_parts(cp, r)));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:idpat:upui:") {
        let (cp, r, star) = split3(rest, 13)?;
        return (star == "*").then(|| format!("{DL}01/{}", gtin_from_parts(cp, r)));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:idpat:sgcn:") {
        let (cp, r, star) = split3(rest, 12)?;
        return (star == "*").then(|| format!("{DL}255/{}", with_check(&format!("{cp}{r}"))));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:id:gsin:") {
        let (cp, r) = split2(rest)?;
        return (all_digits(r) && cp.len() + r.len() == 16)
            .then(|| format!("{DL}402/{}", with_check(&format!("{cp}{r}"))));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:id:ginc:") {
        let (cp, r) = split2(rest)?;
        return Some(format!("{DL}401/{cp}{}", percent(r)));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:id:cpi:") {
        let (cp, r) = split2(rest)?;
        let (cpref, ser) = r.rsplit_once('.')?;
        return Some(format!(
            "{DL}8010/{}/8011/{ser}",
            percent(&format!("{cp}{cpref}"))
        ));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:class:lgtin:") {
        let (cp, r, lot) = split3(rest, 13)?;
        return Some(format!(
            "{DL}01/{}/10/{}",
            gtin_from_parts(cp, r),
            percent(lot)
        ));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:idpat:sgtin:") {
        let (cp, r, star) = split3(rest, 13)?;
        return (star == "*").then(|| format!("{DL}01/{}", gtin_from_parts(cp, r)));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:idpat:grai:") {
        let (cp, r, star) = split3(rest, 12)?;
        return (star == "*").then(|| format!("{DL}8003/{}", with_check(&format!("0{cp}{r}"))));
    }
    if let Some(rest) = uri.strip_prefix("urn:epc:idpat:gdti:") {
        let (cp, r, star) = split3(rest, 12)?;
        return (star == "*").then(|| format!("{DL}253/{}", with_check(&format!("{cp}{r}"))));
    }
    canonical_web_uri(uri)
}

/// Primary-key AIs, with their short names, as the reference normaliser knows them.
const KEYS: [(&str, &str); 14] = [
    ("01", "gtin"),
    ("8006", "itip"),
    ("8010", "cpid"),
    ("414", "gln"),
    ("417", "party"),
    ("8017", "gsrnp"),
    ("8018", "gsrn"),
    ("255", "gcn"),
    ("00", "sscc"),
    ("253", "gdti"),
    ("401", "ginc"),
    ("402", "gsin"),
    ("8003", "grai"),
    ("8004", "giai"),
];

fn canonical_web_uri(uri: &str) -> Option<String> {
    let path = dl_path(uri)?;
    let mut segs: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let short = KEYS.iter().find(|(_, n)| *n == p).map(|(ai, _)| *ai);
            match (short, p) {
                (Some(ai), _) => ai.to_owned(),
                (None, "cpv") => "22".to_owned(),
                (None, "lot") => "10".to_owned(),
                (None, "ser") => "21".to_owned(),
                _ => p.to_owned(),
            }
        })
        .collect();
    let start = segs
        .iter()
        .position(|p| KEYS.iter().any(|(ai, _)| ai == p))?;
    segs.drain(..start);
    if segs.len() < 2 || !segs[1].bytes().take(4).all(|b| b.is_ascii_digit()) {
        return None;
    }
    if segs[0] == "01" {
        let g = &segs[1];
        if all_digits(g) && [8, 12, 13].contains(&g.len()) {
            segs[1] = format!("{g:0>14}");
        }
    }
    // Only the most specific level: no CPV (22), and no lot (10) where a serial (21) follows.
    let mut out: Vec<String> = vec![segs[0].clone(), segs[1].clone()];
    let pairs: Vec<(String, String)> = segs[2..]
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect();
    let has_serial = pairs.iter().any(|(ai, _)| ai == "21");
    for (ai, v) in pairs {
        if ai == "22" || (ai == "10" && has_serial) {
            continue;
        }
        out.push(ai);
        out.push(v);
    }
    Some(format!("https://id.gs1.org/{}", out.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digits_and_gtins() {
        assert_eq!(check_digit("0401234500001"), 6);
        assert_eq!(gtin14("04012345000016").unwrap(), "04012345000016");
        assert_eq!(gtin14("4012345000016").unwrap(), "04012345000016");
        assert!(gtin14("04012345000017").is_err());
        assert!(gtin14("12ab").is_err());
    }

    #[test]
    fn classes_to_gtin14() {
        // The indicator digit (first of the item reference) leads the GTIN.
        assert_eq!(
            gtin_of("urn:epc:class:lgtin:4012345.012345.998877").unwrap(),
            "04012345123456"
        );
        assert_eq!(
            gtin_of("urn:epc:idpat:sgtin:4012345.112345.*").unwrap(),
            "14012345123453"
        );
        assert_eq!(
            gtin_of("https://id.gs1.org/01/04012345123456/10/998877").unwrap(),
            "04012345123456"
        );
        assert_eq!(
            gtin_of("https://example.com/gtin/4012345123456?x=1").unwrap(),
            "04012345123456"
        );
        assert!(gtin_of("https://id.gs1.org/01/04012345123457").is_err());
        assert!(gtin_of("urn:epc:idpat:sgtin:4012345.012345.77").is_err());
        assert!(gtin_of("urn:epc:class:lgtin:4012345.0123.1").is_err());
        assert!(gtin_of("urn:example:thing").is_err());
    }

    #[test]
    fn locations_to_gln() {
        let a = gln_of("urn:epc:id:sgln:4012345.00001.0").unwrap();
        assert_eq!(a.gln, "4012345000016");
        assert_eq!(a.extension, None);
        assert_eq!(gln_of("https://id.gs1.org/414/4012345000016"), Some(a));
        let b = gln_of("urn:epc:id:sgln:4012345.00001.12").unwrap();
        assert_eq!(
            gln_of("https://id.gs1.org/414/4012345000016/254/12"),
            Some(b)
        );
        assert_eq!(gln_of("https://id.gs1.org/414/4012345000017"), None);
        assert_eq!(gln_of("DC1"), None);
    }

    #[test]
    fn canonical_digital_links() {
        assert_eq!(
            canonical_dl("urn:epc:id:sgtin:4012345.011111.9876").unwrap(),
            "https://id.gs1.org/01/04012345111118/21/9876"
        );
        assert_eq!(
            canonical_dl("urn:epc:id:sscc:5200001.0111111146").unwrap(),
            "https://id.gs1.org/00/052000011111111461"
        );
        assert_eq!(
            canonical_dl("urn:epc:id:pgln:5200001.00000").unwrap(),
            "https://id.gs1.org/417/5200001000008"
        );
        assert_eq!(
            canonical_dl("https://example.org/gtin/4012345111118/lot/1/ser/2?a=b").unwrap(),
            "https://id.gs1.org/01/04012345111118/21/2"
        );
        assert_eq!(
            canonical_dl("urn:epcglobal:cbv:bt:5200001000008:4711"),
            None
        );
    }
}
