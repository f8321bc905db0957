//! Watches a tar stream on its way to `cvmfs_server ingest` for what ingest would drop without a
//! word: the `trusted.overlay.opaque` xattr (ingest drops every xattr), and, behind a gateway,
//! device files and FIFOs (the receiver drops them). The stream is stopped before such an entry
//! reaches ingest, so the layer fails instead of being published wrong. Trees that a
//! `fill_dir` callback builds behind a gateway leave special files out already (`FillHints`), so
//! only a tar stream given to `ingest_tar` as it is can be stopped for one.

use std::io::{self, Read};

/// What the guard found, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A PAX record sets `trusted.overlay.opaque`.
    OpaqueXattr,
    /// A character or block device or a FIFO, on a repository that cannot store it.
    SpecialFile,
    /// A header whose size field cannot be a real entry: padded to 512 bytes it overflows u64.
    OversizedEntry,
}

#[derive(Debug)]
enum State {
    /// Collecting a 512-byte header.
    Header,
    /// Collecting the data of a PAX header (`remaining` bytes), then skipping `padding`.
    Pax { remaining: u64, padding: u64 },
    /// Skipping entry data and padding.
    Skip { remaining: u64 },
}

/// A `Read` adapter that parses tar headers as the bytes pass.
pub(crate) struct TarGuard<R> {
    inner: R,
    refuse_special: bool,
    state: State,
    header: Vec<u8>,
    pax: Vec<u8>,
    found: Option<Refused>,
}

/// PAX data beyond this is not kept (xattr records of interest are tiny).
const PAX_KEEP: usize = 1 << 20;

impl<R: Read> TarGuard<R> {
    pub(crate) fn new(inner: R, refuse_special: bool) -> Self {
        Self {
            inner,
            refuse_special,
            state: State::Header,
            header: Vec::with_capacity(512),
            pax: Vec::new(),
            found: None,
        }
    }

    pub(crate) fn found(&self) -> Option<Refused> {
        self.found
    }

    fn inspect(&mut self, mut bytes: &[u8]) -> Option<Refused> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Header => {
                    let take = (512 - self.header.len()).min(bytes.len());
                    self.header.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.header.len() == 512 {
                        if let Some(refused) = self.parse_header() {
                            return Some(refused);
                        }
                        self.header.clear();
                    }
                }
                State::Pax { remaining, padding } => {
                    if *remaining > 0 {
                        let take = (*remaining).min(bytes.len() as u64) as usize;
                        if self.pax.len() < PAX_KEEP {
                            self.pax.extend_from_slice(&bytes[..take]);
                        }
                        *remaining -= take as u64;
                        bytes = &bytes[take..];
                        if *remaining == 0 && contains(&self.pax, b".xattr.trusted.overlay.opaque=")
                        {
                            return Some(Refused::OpaqueXattr);
                        }
                    } else {
                        let take = (*padding).min(bytes.len() as u64);
                        *padding -= take;
                        bytes = &bytes[take as usize..];
                    }
                    if matches!(
                        self.state,
                        State::Pax {
                            remaining: 0,
                            padding: 0
                        }
                    ) {
                        self.state = State::Header;
                    }
                }
                State::Skip { remaining } => {
                    let take = (*remaining).min(bytes.len() as u64);
                    *remaining -= take;
                    bytes = &bytes[take as usize..];
                    if *remaining == 0 {
                        self.state = State::Header;
                    }
                }
            }
        }
        None
    }

    fn parse_header(&mut self) -> Option<Refused> {
        let h = &self.header;
        if h.iter().all(|b| *b == 0) {
            return None; // end-of-archive block
        }
        let size = parse_size(&h[124..136]);
        // A hostile size (near u64::MAX) must stop the stream, not wrap or panic.
        let Some(padded) = size.div_ceil(512).checked_mul(512) else {
            return Some(Refused::OversizedEntry);
        };
        let kind = h[156];
        if self.refuse_special && matches!(kind, b'3' | b'4' | b'6') {
            return Some(Refused::SpecialFile);
        }
        self.state = match kind {
            b'x' | b'g' if size > 0 => {
                self.pax.clear();
                State::Pax {
                    remaining: size,
                    padding: padded.saturating_sub(size),
                }
            }
            _ if padded > 0 => State::Skip { remaining: padded },
            _ => State::Header,
        };
        None
    }
}

/// Octal, or GNU base-256 when the high bit is set; garbage reads as 0 (ingest will reject it).
fn parse_size(field: &[u8]) -> u64 {
    if field[0] & 0x80 != 0 {
        return field[1..].iter().fold(0u64, |acc, b| {
            acc.saturating_mul(256).saturating_add(u64::from(*b))
        });
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .filter(|b| (b'0'..=b'7').contains(b))
        .collect();
    std::str::from_utf8(&text)
        .ok()
        .and_then(|t| u64::from_str_radix(t, 8).ok())
        .unwrap_or(0)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.found.is_some() {
            return Err(io::Error::other(
                "tar stream stopped: it holds what ingest would drop",
            ));
        }
        let n = self.inner.read(buf)?;
        if let Some(refused) = self.inspect(&buf[..n]) {
            self.found = Some(refused);
            return Err(io::Error::other(
                "tar stream stopped: it holds what ingest would drop",
            ));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    }

    fn drain(tar: &[u8], refuse_special: bool, chunk: usize) -> Option<Refused> {
        let mut guard = TarGuard::new(tar, refuse_special);
        let mut buf = vec![0; chunk];
        loop {
            match guard.read(&mut buf) {
                Ok(0) => return guard.found(),
                Ok(_) => {}
                Err(_) => return guard.found(),
            }
        }
    }

    /// A header block with `size` written as GNU base-256 (the largest form a tar can carry).
    fn header_with_size(kind: u8, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_size(0);
        let mut block = h.as_bytes().to_vec();
        let field = &mut block[124..136];
        field.fill(0);
        field[0] = 0x80;
        field[4..12].copy_from_slice(&size.to_be_bytes());
        let sum: u32 = block
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(*b)
                }
            })
            .sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        block.extend_from_slice(&[0; 1024]);
        block
    }

    #[test]
    fn hostile_entry_sizes_stop_the_stream_instead_of_overflowing() {
        for kind in [b'0', b'x', b'g', b'L'] {
            for size in [u64::MAX, u64::MAX - 510] {
                let tar = header_with_size(kind, size);
                for chunk in [1, 512, 4096] {
                    assert_eq!(
                        drain(&tar, false, chunk),
                        Some(Refused::OversizedEntry),
                        "type {kind} size {size} chunk {chunk}"
                    );
                }
            }
        }
        // The largest size that still pads within u64 is skipped, not refused.
        let fits = u64::MAX - 511;
        assert_eq!(drain(&header_with_size(b'0', fits), false, 512), None);
    }

    #[test]
    fn opaque_xattrs_and_special_files_are_found_in_any_chunking() {
        let mut plain = tar::Builder::new(Vec::new());
        // A file whose content merely looks like the PAX record must not trip the guard.
        file(
            &mut plain,
            "a",
            b"20 SCHILY.xattr.trusted.overlay.opaque=y\n",
        );
        plain
            .append_pax_extensions([("SCHILY.xattr.user.k", &b"v"[..])])
            .unwrap();
        file(&mut plain, "b", &[7; 1000]);
        let plain = plain.into_inner().unwrap();

        let mut opaque = tar::Builder::new(Vec::new());
        file(&mut opaque, "a", &[1; 700]);
        opaque
            .append_pax_extensions([("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..])])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        opaque.append_data(&mut h, "dir", &[][..]).unwrap();
        let opaque = opaque.into_inner().unwrap();

        let mut device = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Char);
        h.set_mode(0);
        h.set_size(0);
        device.append_data(&mut h, "wh", &[][..]).unwrap();
        let device = device.into_inner().unwrap();

        for chunk in [1, 7, 512, 4096] {
            assert_eq!(drain(&plain, true, chunk), None, "chunk {chunk}");
            assert_eq!(
                drain(&opaque, false, chunk),
                Some(Refused::OpaqueXattr),
                "chunk {chunk}"
            );
            assert_eq!(
                drain(&device, true, chunk),
                Some(Refused::SpecialFile),
                "chunk {chunk}"
            );
            assert_eq!(drain(&device, false, chunk), None, "chunk {chunk}");
        }
    }
}
