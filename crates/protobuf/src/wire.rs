//! A minimal protobuf wire-format reader: keys, varints, fixed64 and length-delimited fields, bounded by
//! the input so malformed bodies fail instead of over-reading.

/// Why bytes are not valid protobuf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// the input ends inside a field
    #[error("truncated input")]
    Truncated,
    /// a varint is longer than 10 bytes
    #[error("varint too long")]
    VarintTooLong,
    /// a key uses a wire type protobuf does not define (or the deprecated groups)
    #[error("unsupported wire type {0}")]
    UnsupportedWireType(u64),
    /// a field arrived with a wire type its declared type cannot have
    #[error("unexpected wire type {0:?}")]
    UnexpectedWireType(WireType),
    /// a string field is not UTF-8
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// field number 0 is reserved
    #[error("field number 0")]
    ZeroTag,
}

/// The wire types Kubernetes' messages use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    Varint,
    Fixed64,
    Len,
    Fixed32,
}

/// Reads fields from one message's bytes.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The next field's number and wire type, or `None` at the end of the message.
    pub fn key(&mut self) -> Result<Option<(u32, WireType)>, WireError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire_type = match key & 7 {
            0 => WireType::Varint,
            1 => WireType::Fixed64,
            2 => WireType::Len,
            5 => WireType::Fixed32,
            other => return Err(WireError::UnsupportedWireType(other)),
        };
        let tag = u32::try_from(key >> 3).map_err(|_| WireError::VarintTooLong)?;
        if tag == 0 {
            return Err(WireError::ZeroTag);
        }
        Ok(Some((tag, wire_type)))
    }

    pub fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for (i, byte) in self.bytes.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.bytes = &self.bytes[i + 1..];
                return Ok(value);
            }
        }
        Err(if self.bytes.len() >= 10 {
            WireError::VarintTooLong
        } else {
            WireError::Truncated
        })
    }

    pub fn fixed64(&mut self) -> Result<u64, WireError> {
        let (head, rest) = self.bytes.split_first_chunk::<8>().ok_or(WireError::Truncated)?;
        self.bytes = rest;
        Ok(u64::from_le_bytes(*head))
    }

    /// A length-delimited field's bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let len = usize::try_from(self.varint()?).map_err(|_| WireError::Truncated)?;
        if len > self.bytes.len() {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    pub fn string(&mut self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| WireError::InvalidUtf8)
    }

    /// Skips a field's value.
    pub fn skip(&mut self, wire_type: WireType) -> Result<(), WireError> {
        match wire_type {
            WireType::Varint => self.varint().map(drop),
            WireType::Fixed64 => self.fixed64().map(drop),
            WireType::Len => self.bytes().map(drop),
            WireType::Fixed32 => {
                let rest = self.bytes.get(4..).ok_or(WireError::Truncated)?;
                self.bytes = rest;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_varints_and_rejects_truncation() {
        let mut reader = Reader::new(&[0x96, 0x01, 0xff]);
        assert_eq!(reader.varint(), Ok(150));
        assert_eq!(reader.varint(), Err(WireError::Truncated));
    }

    #[test]
    fn length_beyond_input_is_truncated() {
        let mut reader = Reader::new(&[0x0a, 0x05, b'a']);
        assert_eq!(reader.key(), Ok(Some((1, WireType::Len))));
        assert_eq!(reader.bytes(), Err(WireError::Truncated));
    }
}
