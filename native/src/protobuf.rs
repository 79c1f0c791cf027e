//! The protobuf wire format, read field by field over one message's bytes.

/// A protobuf wire-format reader over one message's bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

pub(crate) type Parsed<T> = Result<T, ()>;

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(crate) fn varint(&mut self) -> Parsed<u64> {
        let mut out: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self.buf.get(self.pos).ok_or(())?;
            self.pos += 1;
            out |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
            if byte < 0x80 {
                return Ok(out);
            }
        }
        Err(())
    }

    pub(crate) fn take(&mut self, n: usize) -> Parsed<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(())?;
        let out = self.buf.get(self.pos..end).ok_or(())?;
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn bytes(&mut self) -> Parsed<&'a [u8]> {
        let n = usize::try_from(self.varint()?).map_err(|_| ())?;
        self.take(n)
    }

    pub(crate) fn text(&mut self) -> Parsed<&'a str> {
        // proto3 strings are UTF-8; the Python parser refuses a message where they are not.
        std::str::from_utf8(self.bytes()?).map_err(|_| ())
    }

    pub(crate) fn tag(&mut self) -> Parsed<(u64, u8)> {
        let tag = self.varint()?;
        let field = tag >> 3;
        // Field numbers run from 1 to 2^29 - 1: a tag past 32 bits is no protobuf.
        if field == 0 || field > 0x1FFF_FFFF {
            return Err(());
        }
        Ok((field, (tag & 7) as u8))
    }

    /// Past a field this decoder does not read (exemplars, histograms, metadata, anything newer).
    pub(crate) fn skip(&mut self, wire: u8) -> Parsed<()> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.take(8).map(|_| ()),
            2 => self.bytes().map(|_| ()),
            5 => self.take(4).map(|_| ()),
            // A group (no sender writes one; the Python parser, asked then, skips it) or no
            // wire type at all.
            _ => Err(()),
        }
    }
}
