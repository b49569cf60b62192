//! The bad-input corpus: every malformed file gives a clear message with file, line and column
//! (and never a panic); the harmless oddities of real exports (quotes, CRLF, a BOM, `12.000`) are
//! read as meant.

mod common;

use common::{CONFIG, audit};
use driftless_audit::{AuditError, InputError, Report};

const BASELINE: &str = "sku,location,quantity\nMUG-1,DC1,100\n";
const WMS: &str = "sku,location,on_hand\nMUG-1,DC1,100\n";
const ERP: &str = "sku,location,on_hand\nMUG-1,DC1,100\n";
const SHOP: &str = "sku,quantity\nMUG-1,100\n";

fn run(name: &str, replace: &[(&str, &str)]) -> Result<Report, AuditError> {
    let mut files: Vec<(&str, &str)> = vec![
        ("baseline.csv", BASELINE),
        ("wms.csv", WMS),
        ("erp.csv", ERP),
        ("shop.csv", SHOP),
    ];
    for (f, t) in replace {
        match files.iter_mut().find(|(n, _)| n == f) {
            Some(slot) => slot.1 = t,
            None => files.push((f, t)),
        }
    }
    audit(name, CONFIG, &files)
}

/// The input errors of a failed audit.
fn errors(name: &str, replace: &[(&str, &str)]) -> (Vec<InputError>, u64) {
    match run(name, replace) {
        Err(AuditError::Input { errors, total }) => (errors, total),
        other => panic!("expected input errors, got {other:?}"),
    }
}

fn first(name: &str, replace: &[(&str, &str)]) -> InputError {
    let (e, _) = errors(name, replace);
    e.into_iter().next().unwrap()
}

#[test]
fn quotes_crlf_bom_and_decimal_zeros_are_read_as_meant() {
    let r = run(
        "oddities",
        &[
            ("baseline.csv", "\u{feff}sku,location,quantity\r\n\"MUG-1\",\"DC1\",\"100\"\r\n\"MUG,2\",DC1,5\r\n"),
            ("wms.csv", "\u{feff}\"sku\",\"location\",\"on_hand\"\r\nMUG-1,DC1,100.000\r\n\"MUG,2\",DC1,5\r\n"),
            ("erp.csv", "SKU , Location , On_Hand\nMUG-1,DC1, 100 \n\"MUG,2\",DC1,5\n\n"),
            ("shop.csv", "sku,quantity\r\nMUG-1,100\r\n\"MUG,2\",5\r\n"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.drifting, 0, "{r:?}");
    assert_eq!(r.skus_compared, 4);
}

#[test]
fn a_bad_number_is_located() {
    let e = first(
        "badnum",
        &[("wms.csv", "sku,location,on_hand\nMUG-1,DC1,12x\n")],
    );
    assert!(e.file.ends_with("wms.csv"), "{e}");
    assert_eq!((e.line, e.column), (2, 3), "{e}");
    assert!(e.message.contains("`12x` is not a whole number"), "{e}");
    for bad in ["1,200", "12.5", "1e3", "", "-", "99999999999999"] {
        let text = format!("sku,location,on_hand\nMUG-1,DC1,\"{bad}\"\n");
        let e = first("badnums", &[("wms.csv", &text)]);
        assert_eq!((e.line, e.column), (2, 3), "{bad:?}: {e}");
    }
}

#[test]
fn thousands_of_bad_rows_are_counted_and_the_first_shown() {
    let mut text = String::from("sku,location,on_hand\n");
    for i in 0..5000 {
        text.push_str(&format!("SKU-{i},DC1,n/a\n"));
    }
    let (errors, total) = errors("thousands", &[("erp.csv", &text)]);
    assert_eq!(total, 5000);
    assert_eq!(errors.len(), 20);
    assert_eq!(errors[0].line, 2);
    let shown = AuditError::Input { errors, total }.to_string();
    assert!(shown.contains("and 4980 more"), "{shown}");
}

#[test]
fn duplicate_keys_name_both_lines() {
    let e = first(
        "dup",
        &[(
            "erp.csv",
            "sku,location,on_hand\nMUG-1,DC1,100\nMUG-2,DC1,1\nMUG-1,DC1,90\n",
        )],
    );
    assert!(e.file.ends_with("erp.csv"), "{e}");
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("line 2"), "{e}");
    let e = first(
        "dup-base",
        &[(
            "baseline.csv",
            "sku,location,quantity\nMUG-1,DC1,1\nMUG-1,DC1,1\n",
        )],
    );
    assert_eq!(e.line, 3, "{e}");
}

#[test]
fn missing_columns_list_the_header() {
    let e = first(
        "nocol",
        &[("wms.csv", "sku,location,qty_on_hand\nMUG-1,DC1,100\n")],
    );
    assert_eq!(e.line, 1, "{e}");
    assert!(e.message.contains("missing column `on_hand`"), "{e}");
    assert!(e.message.contains("qty_on_hand"), "{e}");
    let e = first("nosku", &[("shop.csv", "item,quantity\nMUG-1,100\n")]);
    assert!(e.message.contains("`sku`"), "{e}");
    let e = first("noloc", &[("baseline.csv", "sku,quantity\nMUG-1,100\n")]);
    assert!(e.message.contains("`location`"), "{e}");
}

#[test]
fn malformed_rows_and_files() {
    let e = first("width", &[("wms.csv", "sku,location,on_hand\nMUG-1,DC1\n")]);
    assert_eq!(e.line, 2, "{e}");
    assert!(e.message.contains("2 fields but the header has 3"), "{e}");
    let e = first("empty", &[("erp.csv", "")]);
    assert!(e.message.contains("empty"), "{e}");
    let e = first(
        "quote",
        &[(
            "erp.csv",
            "sku,location,on_hand\n\"MUG-1,DC1,100\nMUG-2,DC1,3\n",
        )],
    );
    assert_eq!(e.line, 2, "{e}");
    let long = format!("sku,location,on_hand\n{},DC1,1\n", "X".repeat(200));
    let e = first("long", &[("wms.csv", &long)]);
    assert!(e.message.contains("at most 128 bytes"), "{e}");
    let e = first(
        "space",
        &[("wms.csv", "sku,location,on_hand\n\"MUG-1 \",DC1,1\n")],
    );
    assert!(e.message.contains("white space"), "{e}");
    assert_eq!((e.line, e.column), (2, 1), "{e}");
    let e = first(
        "unit",
        &[("wms.csv", "sku,location,on_hand,unit\nMUG-1,DC1,1,PAL\n")],
    );
    assert!(e.message.contains("unknown unit `PAL`"), "{e}");
    let e = first(
        "emptyloc",
        &[("baseline.csv", "sku,location,quantity\nMUG-1,,1\n")],
    );
    assert!(e.message.contains("location is empty"), "{e}");
}

#[test]
fn invalid_utf8_is_refused_not_guessed() {
    let d = common::dir("utf8");
    std::fs::write(d.join("wms.csv"), b"sku,location,on_hand\nMUG-\xff,DC1,1\n").unwrap();
    let settings = driftless_config::Settings::parse("t.toml", CONFIG).unwrap();
    std::fs::write(d.join("baseline.csv"), BASELINE).unwrap();
    std::fs::write(d.join("erp.csv"), ERP).unwrap();
    std::fs::write(d.join("shop.csv"), SHOP).unwrap();
    let sys = |s: &str| driftless_core::SystemId::parse(s).unwrap();
    let input = driftless_audit::AuditInput {
        baseline: d.join("baseline.csv"),
        snapshots: vec![
            (sys("wms"), d.join("wms.csv")),
            (sys("erp"), d.join("erp.csv")),
            (sys("shop"), d.join("shop.csv")),
        ],
        changes: vec![],
        at: common::at(),
    };
    match driftless_audit::run_files(&settings, &input) {
        Err(AuditError::Input { errors, .. }) => {
            assert!(errors[0].message.contains("UTF-8"), "{}", errors[0]);
            assert_eq!((errors[0].line, errors[0].column), (2, 1));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn change_log_problems_are_located() {
    let e = first(
        "badtime",
        &[(
            "shop-changes.csv",
            "sku,location,at,quantity,actor\nMUG-1,,yesterday,5,alice\n",
        )],
    );
    assert!(e.file.ends_with("shop-changes.csv"), "{e}");
    assert_eq!((e.line, e.column), (2, 3), "{e}");
    let e = first(
        "noactor",
        &[("shop-changes.csv", "sku,location,at,quantity\n")],
    );
    assert!(e.message.contains("`actor`"), "{e}");
}

#[test]
fn json_lines_snapshots_read_like_csv() {
    let config = CONFIG.replace(
        "[audit]",
        "[audit.snapshots.erp]\nformat = \"jsonl\"\ncolumns = { sku = \"item\", on_hand = \"qty\" }\n\n[audit]",
    );
    let ok = audit(
        "jsonl",
        &config,
        &[
            ("baseline.csv", BASELINE),
            ("wms.csv", WMS),
            (
                "erp.csv",
                "{\"item\": \"MUG-1\", \"location\": \"DC1\", \"qty\": 100}\n\n",
            ),
            ("shop.csv", SHOP),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.drifting, 0);
    let bad = audit(
        "jsonl-bad",
        &config,
        &[
            ("baseline.csv", BASELINE),
            ("wms.csv", WMS),
            (
                "erp.csv",
                "{\"item\": \"MUG-1\", \"location\": \"DC1\", \"qty\": 100}\n{\"item\": \"MUG-2\", \"qty\": }\n",
            ),
            ("shop.csv", SHOP),
        ],
    );
    match bad {
        Err(AuditError::Input { errors, .. }) => {
            assert_eq!(errors[0].line, 2, "{}", errors[0]);
            assert!(errors[0].column > 0, "{}", errors[0]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn configuration_problems_are_named() {
    let settings = driftless_config::Settings::parse("t.toml", CONFIG).unwrap();
    let sys = |s: &str| driftless_core::SystemId::parse(s).unwrap();
    let d = common::dir("cfg");
    let input = driftless_audit::AuditInput {
        baseline: d.join("baseline.csv"),
        snapshots: vec![(sys("wms"), d.join("wms.csv"))],
        changes: vec![],
        at: common::at(),
    };
    let e = driftless_audit::run_files(&settings, &input).unwrap_err();
    assert!(e.to_string().contains("no snapshot for `erp`"), "{e}");
    let e = run("missing-file", &[]).map(|_| ());
    assert!(e.is_ok());
    let input = driftless_audit::AuditInput {
        baseline: d.join("nope.csv"),
        snapshots: vec![
            (sys("wms"), d.join("wms.csv")),
            (sys("erp"), d.join("erp.csv")),
            (sys("shop"), d.join("shop.csv")),
        ],
        changes: vec![],
        at: common::at(),
    };
    let e = driftless_audit::run_files(&settings, &input).unwrap_err();
    assert!(e.to_string().contains("nope.csv"), "{e}");
}

#[test]
fn a_file_without_line_breaks_is_refused_early() {
    let mut text = String::from("sku,location,on_hand\nMUG-1,DC1,");
    text.push_str(&"9".repeat(3 * 1024 * 1024));
    let e = first("longline", &[("wms.csv", &text)]);
    assert!(e.message.contains("longer than"), "{e}");
}
