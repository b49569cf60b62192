//! Pure CSV rendering of a channel snapshot. The header is the snapshot format the drift audit
//! reads (`sku,quantity`), so the file a batch consumer gets can also be audited as-is.

/// Renders rows (already in sku order) as CSV.
pub fn csv(rows: &[(String, i64)]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 16 + 16));
    // Writing to a Vec cannot fail; skus are validated strings that the writer quotes as needed.
    let _ = w.write_record(["sku", "quantity"]);
    for (sku, q) in rows {
        let _ = w.write_record([sku.as_str(), &q.to_string()]);
    }
    w.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn quotes_what_needs_quoting() {
        let out = super::csv(&[("A,1".into(), 3), ("B".into(), 0)]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "sku,quantity\n\"A,1\",3\nB,0\n"
        );
    }
}
