//! The group's event rows in `COPY`'s binary format (PostgreSQL's documentation, `COPY`, "Binary
//! Format"): a signature and two zero words, then per row a field count and each field as its
//! length (−1 for `NULL`) and its bytes in the type's binary form, then −1. Binary rather than
//! text, so that no value is escaped and the server parses nothing: `text` is its UTF-8 bytes
//! (the connection's encoding), `bytea` its bytes, `int8` eight bytes big-endian, `bool` one byte.
//! No I/O here.

use crate::StoreError;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Rows being written; [`CopyRows::finish`] gives the bytes to send.
pub(super) struct CopyRows {
    buf: Vec<u8>,
}

impl CopyRows {
    pub(super) fn new(capacity: usize) -> CopyRows {
        let mut buf = Vec::with_capacity(capacity + 19);
        buf.extend_from_slice(SIGNATURE);
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0i32.to_be_bytes()); // no header extension
        CopyRows { buf }
    }

    /// Starts a row of `fields` fields.
    pub(super) fn row(&mut self, fields: i16) {
        self.buf.extend_from_slice(&fields.to_be_bytes());
    }

    pub(super) fn bytes(&mut self, b: &[u8]) -> Result<(), StoreError> {
        // Event fields are bounded far below this by the request's size; a longer one would
        // make the length word wrong, so it is refused rather than cut.
        let len = i32::try_from(b.len()).map_err(|_| {
            StoreError::WriteFailed(format!("a field of {} bytes is too long to store", b.len()))
        })?;
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(b);
        Ok(())
    }

    pub(super) fn text(&mut self, s: Option<&str>) -> Result<(), StoreError> {
        match s {
            Some(s) => self.bytes(s.as_bytes()),
            None => {
                self.null();
                Ok(())
            }
        }
    }

    pub(super) fn int8(&mut self, v: Option<i64>) {
        match v {
            Some(v) => {
                self.buf.extend_from_slice(&8i32.to_be_bytes());
                self.buf.extend_from_slice(&v.to_be_bytes());
            }
            None => self.null(),
        }
    }

    pub(super) fn bool(&mut self, v: bool) {
        self.buf.extend_from_slice(&1i32.to_be_bytes());
        self.buf.push(u8::from(v));
    }

    fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_its_fields_lengths_and_bytes_between_header_and_trailer() {
        let mut c = CopyRows::new(0);
        c.row(4);
        c.text(Some("é")).unwrap();
        c.text(None).unwrap();
        c.int8(Some(-2));
        c.bool(true);
        let b = c.finish();
        let mut want = Vec::new();
        want.extend_from_slice(b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0");
        want.extend_from_slice(&[0, 4]);
        want.extend_from_slice(&[0, 0, 0, 2, 0xc3, 0xa9]);
        want.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        want.extend_from_slice(&[0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        want.extend_from_slice(&[0, 0, 0, 1, 1]);
        want.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(b, want);
    }
}
