//! The limits that stop a hostile layer early (the reasons for each value are in the crate
//! docs, section "Limits on hostile layers"), and the guard that enforces the one on extension
//! records before the tar parser buffers them.

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

use crate::error::Error;
use crate::read::shown_name;

/// Limits that stop a hostile layer early, each with a typed [`Error`] naming the
/// layer. The defaults are far above what real images hold (the reasons are in the crate docs,
/// section "Limits on hostile layers"); raise one with its setter when an image needs it.
///
/// ```
/// let limits = ducc_unpack::Limits::new().max_entries_per_layer(20_000_000);
/// assert_eq!(limits.max_entries_per_layer, 20_000_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Most tar entries in one layer, extension headers included
    /// (default 4,000,000).
    pub max_entries_per_layer: u64,
    /// Largest PAX extended header (`x`) or GNU long name/link record (`L`, `K`), in bytes; the
    /// tar parser holds such a record in memory (default 1 MiB).
    pub max_pax_header_bytes: u64,
    /// Longest entry path and symlink target, in bytes after normalisation
    /// (default 4095).
    pub max_path_bytes: usize,
    /// Longest path component, in bytes (default 255).
    pub max_name_bytes: usize,
    /// Largest zstd window, as a power of two; a frame that asks for more is refused before its
    /// window is allocated (default 27).
    pub zstd_window_log_max: u32,
    /// Most uncompressed bytes per compressed byte, past the allowance
    /// (default 4096).
    pub max_expansion_ratio: u64,
    /// Uncompressed bytes a compressed layer may always reach, whatever its compressed size
    /// (default 512 MiB).
    pub expansion_allowance: u64,
    /// Largest image config, in bytes ([`DEFAULT_MAX_CONFIG_BYTES`]): a config is held in
    /// memory, so a bigger one is refused by its descriptor's size, before it is downloaded.
    ///
    /// The config is parsed once, as an image config, when it is fetched, before anything of the
    /// image is published; every later step (the flat tree's `.singularity.d` environment, the
    /// podman store, the thin image) uses that parsed value. Fields ducc does not read are
    /// skipped at any depth (a valid config nested 200,000 deep there converts); a field it reads
    /// (`config.Env`, `Labels`, ...) that is nested beyond the JSON parser's depth limit of 128
    /// fails the image at that parse, so nothing of it is published.
    pub max_config_bytes: u64,
}

/// Default [`Limits::max_entries_per_layer`]: 4 million.
pub(crate) const DEFAULT_MAX_ENTRIES_PER_LAYER: u64 = 4_000_000;
/// Default [`Limits::max_pax_header_bytes`]: 1 MiB.
pub(crate) const DEFAULT_MAX_PAX_HEADER_BYTES: u64 = 1 << 20;
/// Default [`Limits::max_path_bytes`]: 4095 (Linux `PATH_MAX`, 4096, counts the closing NUL).
pub(crate) const DEFAULT_MAX_PATH_BYTES: usize = 4095;
/// Default [`Limits::max_name_bytes`]: 255 (Linux `NAME_MAX`).
pub(crate) const DEFAULT_MAX_NAME_BYTES: usize = 255;
/// Default [`Limits::zstd_window_log_max`]: 27 (a 128 MiB window).
pub(crate) const DEFAULT_ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// Default [`Limits::max_expansion_ratio`]: 4096 to 1.
pub(crate) const DEFAULT_MAX_EXPANSION_RATIO: u64 = 4096;
/// Default [`Limits::expansion_allowance`]: 512 MiB.
pub(crate) const DEFAULT_EXPANSION_ALLOWANCE: u64 = 512 << 20;
/// Default [`Limits::max_config_bytes`]: 32 MiB (real configs are a few KiB; the largest seen,
/// with thousands of history entries, under 1 MiB).
pub const DEFAULT_MAX_CONFIG_BYTES: u64 = 32 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries_per_layer: DEFAULT_MAX_ENTRIES_PER_LAYER,
            max_pax_header_bytes: DEFAULT_MAX_PAX_HEADER_BYTES,
            max_path_bytes: DEFAULT_MAX_PATH_BYTES,
            max_name_bytes: DEFAULT_MAX_NAME_BYTES,
            zstd_window_log_max: DEFAULT_ZSTD_WINDOW_LOG_MAX,
            max_expansion_ratio: DEFAULT_MAX_EXPANSION_RATIO,
            expansion_allowance: DEFAULT_EXPANSION_ALLOWANCE,
            max_config_bytes: DEFAULT_MAX_CONFIG_BYTES,
        }
    }
}

impl Limits {
    /// The default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same limits with another [`Limits::max_entries_per_layer`].
    pub fn max_entries_per_layer(mut self, entries: u64) -> Self {
        self.max_entries_per_layer = entries;
        self
    }

    /// The same limits with another [`Limits::max_pax_header_bytes`].
    pub fn max_pax_header_bytes(mut self, bytes: u64) -> Self {
        self.max_pax_header_bytes = bytes;
        self
    }

    /// The same limits with another [`Limits::max_path_bytes`].
    pub fn max_path_bytes(mut self, bytes: usize) -> Self {
        self.max_path_bytes = bytes;
        self
    }

    /// The same limits with another [`Limits::max_name_bytes`].
    pub fn max_name_bytes(mut self, bytes: usize) -> Self {
        self.max_name_bytes = bytes;
        self
    }

    /// The same limits with another [`Limits::zstd_window_log_max`] (libzstd accepts 10 to 31).
    pub fn zstd_window_log_max(mut self, log: u32) -> Self {
        self.zstd_window_log_max = log;
        self
    }

    /// The same limits with another [`Limits::max_expansion_ratio`].
    pub fn max_expansion_ratio(mut self, ratio: u64) -> Self {
        self.max_expansion_ratio = ratio;
        self
    }

    /// The same limits with another [`Limits::expansion_allowance`].
    pub fn expansion_allowance(mut self, bytes: u64) -> Self {
        self.expansion_allowance = bytes;
        self
    }

    /// The same limits with another [`Limits::max_config_bytes`].
    pub fn max_config_bytes(mut self, bytes: u64) -> Self {
        self.max_config_bytes = bytes;
        self
    }

    /// Most uncompressed bytes allowed after `compressed` compressed bytes (saturating).
    pub(crate) fn expansion_cap(&self, compressed: u64) -> u64 {
        self.expansion_allowance
            .saturating_add(compressed.saturating_mul(self.max_expansion_ratio))
    }
}

/// Size of a tar block.
const BLOCK: usize = 512;

/// Where the guard is in the tar stream.
enum GuardState {
    /// Collecting the header block that starts at `offset`.
    Header,
    /// Collecting a GNU sparse extension block; `data` bytes of entry data follow the last one.
    SparseExtension { data: u64 },
    /// Passing `remaining` bytes of entry data (with padding); a PAX record's data is kept in
    /// `record` (up to `keep` bytes) to learn the `size` it gives the next entry.
    Data {
        remaining: u64,
        keep: u64,
        record: Option<Vec<u8>>,
    },
    /// After the end-of-archive block, or once the stream is malformed (the tar parser reports
    /// that itself): bytes pass unchecked.
    Done,
}

/// Walks the tar stream's header blocks the way the `tar` crate does and refuses an extension
/// record (PAX `x`, GNU `L`/`K`) larger than the limit before the parser buffers it: the parser
/// reads such records whole into memory, so an 8 GiB PAX header from a few MiB of gzip would
/// otherwise be held in RAM.
pub(crate) struct TarGuard<R> {
    inner: R,
    layer: String,
    max_record: u64,
    state: GuardState,
    /// The header block being collected (or a sparse extension block).
    block: Vec<u8>,
    /// Offset of the next byte in the uncompressed stream.
    offset: u64,
    /// The `size` a preceding PAX header gives the next entry (as the parser applies it).
    pax_size: Option<u64>,
    /// The limit error, once broken; shared with [`crate::read::read_entries_limited`].
    pub(crate) broken: Rc<RefCell<Option<Error>>>,
}

impl<R: Read> TarGuard<R> {
    pub(crate) fn new(inner: R, layer: &str, limits: &Limits) -> Self {
        TarGuard {
            inner,
            layer: layer.to_owned(),
            max_record: limits.max_pax_header_bytes,
            state: GuardState::Header,
            block: Vec::with_capacity(BLOCK),
            offset: 0,
            pax_size: None,
            broken: Rc::new(RefCell::new(None)),
        }
    }

    /// Follows `bytes`, which the parser is about to receive.
    fn observe(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        while !bytes.is_empty() {
            match &mut self.state {
                GuardState::Done => return Ok(()),
                GuardState::Header | GuardState::SparseExtension { .. } => {
                    let take = (BLOCK - self.block.len()).min(bytes.len());
                    self.block.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    self.offset += take as u64;
                    if self.block.len() == BLOCK {
                        self.state = match self.state {
                            GuardState::SparseExtension { data } => {
                                self.sparse_extension_block(data)
                            }
                            _ => self.header_block()?,
                        };
                        self.block.clear();
                    }
                }
                GuardState::Data {
                    remaining,
                    keep,
                    record,
                } => {
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    if let Some(record) = record {
                        let kept = usize::try_from(*keep).unwrap_or(usize::MAX).min(take);
                        record.extend_from_slice(&bytes[..kept]);
                        *keep -= kept as u64;
                    }
                    *remaining -= take as u64;
                    bytes = &bytes[take..];
                    self.offset += take as u64;
                    if *remaining == 0 {
                        if let Some(record) = record.take() {
                            self.pax_size = pax_size_value(&record);
                        }
                        self.state = GuardState::Header;
                    }
                }
            }
        }
        Ok(())
    }

    /// The state after a complete header block.
    fn header_block(&mut self) -> Result<GuardState, Error> {
        let header_offset = self.offset - BLOCK as u64;
        if self.block.iter().all(|&b| b == 0) {
            return Ok(GuardState::Done);
        }
        let header = tar::Header::from_byte_slice(&self.block);
        let sum: u32 = self.block[..148]
            .iter()
            .chain(&self.block[156..])
            .map(|&b| u32::from(b))
            .sum::<u32>()
            + 8 * 32;
        if header.cksum().ok() != Some(sum) {
            return Ok(GuardState::Done);
        }
        let entry_type = header.entry_type();
        let is_extension = entry_type.is_gnu_longname()
            || entry_type.is_gnu_longlink()
            || entry_type.is_pax_local_extensions()
            || entry_type.is_pax_global_extensions();
        let size = match self.pax_size.filter(|_| !is_extension) {
            Some(size) => size,
            None => match header.entry_size() {
                Ok(size) => size,
                Err(_) => return Ok(GuardState::Done),
            },
        };
        let Some(padded) = size
            .checked_add(BLOCK as u64 - 1)
            .map(|s| s & !(BLOCK as u64 - 1))
        else {
            return Ok(GuardState::Done);
        };
        let recognised = header.as_gnu().is_some() || header.as_ustar().is_some();
        let buffered_kind = if !recognised {
            None
        } else if entry_type.is_pax_local_extensions() {
            Some("PAX extended header")
        } else if entry_type.is_gnu_longname() {
            Some("GNU long name")
        } else if entry_type.is_gnu_longlink() {
            Some("GNU long link")
        } else {
            None
        };
        if let Some(kind) = buffered_kind {
            if size > self.max_record {
                return Err(Error::ExtensionHeaderTooLarge {
                    layer: self.layer.clone(),
                    kind,
                    header: shown_name(&header.path_bytes()),
                    offset: header_offset,
                    size,
                    limit: self.max_record,
                });
            }
            if !entry_type.is_pax_local_extensions() {
                return Ok(Self::data(padded, 0, None));
            }
            if size == 0 {
                // An empty PAX record gives no size.
                self.pax_size = None;
                return Ok(GuardState::Header);
            }
            let record = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            return Ok(Self::data(padded, size, Some(record)));
        }
        // The entry the PAX header described: its size is used up.
        self.pax_size = None;
        let extended =
            entry_type.is_gnu_sparse() && header.as_gnu().is_some_and(|g| g.is_extended());
        if extended {
            return Ok(GuardState::SparseExtension { data: padded });
        }
        Ok(Self::data(padded, 0, None))
    }

    /// The state after a GNU sparse extension block (its flag byte says whether another follows).
    fn sparse_extension_block(&self, data: u64) -> GuardState {
        if self.block[504] == 1 {
            GuardState::SparseExtension { data }
        } else {
            Self::data(data, 0, None)
        }
    }

    fn data(remaining: u64, keep: u64, record: Option<Vec<u8>>) -> GuardState {
        if remaining == 0 {
            return GuardState::Header;
        }
        GuardState::Data {
            remaining,
            keep,
            record,
        }
    }
}

/// The `size` record of a PAX header, read as the `tar` crate reads it (the first `size` key; a
/// malformed record or value gives none).
fn pax_size_value(record: &[u8]) -> Option<u64> {
    for extension in tar::PaxExtensions::new(record) {
        let extension = extension.ok()?;
        if extension.key() != Ok("size") {
            continue;
        }
        return extension.value().ok()?.parse().ok();
    }
    None
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(error) = self.broken.borrow().as_ref() {
            return Err(io::Error::other(error.to_string()));
        }
        let n = self.inner.read(buf)?;
        if let Err(error) = self.observe(&buf[..n]) {
            let message = error.to_string();
            *self.broken.borrow_mut() = Some(error);
            return Err(io::Error::other(message));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::{read_entries, read_entries_with_limits};
    use crate::testutil::Layer;

    /// A ustar header block of the given type, name and announced size (no data follows).
    fn raw_header(name: &str, kind: tar::EntryType, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(size);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    /// Counts the bytes a reader hands out.
    struct Counting<R> {
        inner: R,
        read: u64,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    fn drain(tar: &[u8], limits: &Limits) -> Result<u64, Error> {
        read_entries_with_limits(tar, "layer-l", limits, |_, data| {
            io::copy(data, &mut io::sink())
                .map(|_| ())
                .map_err(|source| Error::Tar {
                    layer: "layer-l".into(),
                    source,
                })
        })
    }

    #[test]
    fn a_layer_with_more_entries_than_the_limit_is_refused_naming_it() {
        let mut layer = Layer::new();
        for i in 0..11 {
            layer.file(&format!("f{i}"), b"x");
        }
        let tar = layer.bytes();
        let limits = Limits::new().max_entries_per_layer(10);
        let err = drain(&tar, &limits).expect_err("11 entries, limit 10");
        assert!(
            matches!(err, Error::TooManyEntries { ref layer, limit: 10 } if layer == "layer-l"),
            "{err:?}"
        );
        assert!(err.to_string().contains("layer-l"), "{err}");
        let limits = Limits::new().max_entries_per_layer(11);
        assert_eq!(drain(&tar, &limits).expect("11 entries, limit 11"), 11);
    }

    #[test]
    fn a_huge_pax_header_is_refused_before_it_is_read() {
        // An 8 GiB PAX header: the parser would try to hold all of it in memory.
        let mut stream = raw_header("././@PaxHeader", tar::EntryType::XHeader, 8 << 30);
        stream.extend_from_slice(&[b'9'; 4096]);
        let mut reader = Counting {
            inner: io::Read::chain(&stream[..], io::repeat(b'1')),
            read: 0,
        };
        let err = read_entries(&mut reader, "layer-p", |_, _| Ok(())).expect_err("refused");
        let Error::ExtensionHeaderTooLarge {
            layer,
            kind,
            header,
            offset,
            size,
            limit,
        } = &err
        else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!(
            (
                layer.as_str(),
                *kind,
                header.as_str(),
                *offset,
                *size,
                *limit
            ),
            (
                "layer-p",
                "PAX extended header",
                "././@PaxHeader",
                0,
                8 << 30,
                DEFAULT_MAX_PAX_HEADER_BYTES
            )
        );
        assert!(reader.read < 64 * 1024, "read {} bytes", reader.read);
    }

    #[test]
    fn a_pax_header_over_a_lowered_limit_is_refused_and_one_under_it_passes() {
        let value = vec![b'v'; 2000];
        let tar = Layer::new()
            .file_with(
                b"f",
                b"data",
                0o644,
                0,
                0,
                &[("SCHILY.xattr.user.big", &value)],
            )
            .bytes();
        let err = drain(&tar, &Limits::new().max_pax_header_bytes(1000)).expect_err("refused");
        assert!(
            matches!(err, Error::ExtensionHeaderTooLarge { limit: 1000, size, .. } if size > 2000),
            "{err:?}"
        );
        assert_eq!(drain(&tar, &Limits::new()).expect("default limit"), 1);
    }

    #[test]
    fn a_huge_gnu_long_name_is_refused_before_it_is_read() {
        let mut stream = raw_header("././@LongLink", tar::EntryType::GNULongName, 1 << 30);
        stream.extend_from_slice(&[b'a'; 1024]);
        let err = read_entries(&stream[..], "layer-g", |_, _| Ok(())).expect_err("refused");
        assert!(
            matches!(err, Error::ExtensionHeaderTooLarge { kind: "GNU long name", size, .. } if size == 1 << 30),
            "{err:?}"
        );
    }

    #[test]
    fn the_guard_follows_pax_sizes_and_finds_a_later_huge_header() {
        // A file whose size comes from its PAX record (the header says 0), then a huge PAX
        // header: the guard must skip exactly the PAX-sized data to see the second header.
        let mut layer = Layer::new();
        let data = vec![7u8; 1500];
        layer.file_with(b"sized", &data, 0o644, 0, 0, &[]);
        let mut tar = layer.bytes();
        // Rewrite: PAX `size=1500` record, then the header with size 0.
        let file_header = tar[..512].to_vec();
        let mut stream = Vec::new();
        let record = b"13 size=1500\n";
        stream.extend(raw_header(
            "./PaxHeaders/sized",
            tar::EntryType::XHeader,
            record.len() as u64,
        ));
        let mut body = record.to_vec();
        body.resize(512, 0);
        stream.extend(body);
        let mut h = tar::Header::from_byte_slice(&file_header).clone();
        h.set_size(0);
        h.set_cksum();
        stream.extend_from_slice(h.as_bytes());
        stream.extend_from_slice(&tar[512..512 + 1536]);
        stream.extend(raw_header(
            "././@PaxHeader",
            tar::EntryType::XHeader,
            4 << 20,
        ));
        stream.extend_from_slice(&[b'8'; 1024]);
        tar.clear();
        let mut sizes = Vec::new();
        let err = read_entries(&stream[..], "layer-s", |e, data| {
            sizes.push(e.size);
            io::copy(data, &mut io::sink())
                .map(|_| ())
                .map_err(|source| Error::Tar {
                    layer: "layer-s".into(),
                    source,
                })
        })
        .expect_err("second header refused");
        assert_eq!(sizes, [1500]);
        assert!(
            matches!(err, Error::ExtensionHeaderTooLarge { offset, .. } if offset == 512 * 2 + 512 + 1536),
            "{err:?}"
        );
    }

    #[test]
    fn an_overlong_path_is_refused_with_its_length_and_the_limit() {
        let long = "d/".repeat(2100) + "f";
        let tar = Layer::new().file(&long, b"").bytes();
        let err = drain(&tar, &Limits::new()).expect_err("refused");
        assert!(
            matches!(err, Error::PathTooLong { what: "path", length: 4201, limit: 4095, ref entry, .. } if entry.len() < 300),
            "{err:?}"
        );
        // Raised, the same path passes.
        assert_eq!(
            drain(&tar, &Limits::new().max_path_bytes(8192)).expect("raised"),
            1
        );
    }

    #[test]
    fn an_overlong_name_component_is_refused() {
        let name = "a/".to_owned() + &"n".repeat(256);
        let tar = Layer::new().file(&name, b"").bytes();
        let err = drain(&tar, &Limits::new()).expect_err("refused");
        assert!(
            matches!(
                err,
                Error::NameTooLong {
                    what: "path",
                    length: 256,
                    limit: 255,
                    ..
                }
            ),
            "{err:?}"
        );
        let tar = Layer::new().hardlink("h", &name).bytes();
        let err = drain(&tar, &Limits::new()).expect_err("refused");
        assert!(
            matches!(
                err,
                Error::NameTooLong {
                    what: "hardlink target",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn an_overlong_symlink_target_is_refused() {
        let target = "t".repeat(5000);
        let tar = Layer::new().symlink("s", &target).bytes();
        let err = drain(&tar, &Limits::new()).expect_err("refused");
        assert!(
            matches!(
                err,
                Error::PathTooLong {
                    what: "symlink target",
                    length: 5000,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_realistic_layer_passes_the_default_limits() {
        // Long names through PAX and GNU, xattrs, a PAX size record, many entries, a hardlink,
        // a deep path close to the limits.
        let deep = format!("{}/{}", "d".repeat(200), "e/".repeat(1800)) + &"n".repeat(255);
        let mut layer = Layer::new();
        layer
            .dir("usr")
            .file_with(
                b"usr/bin/ping",
                b"\x7fELF",
                0o755,
                0,
                0,
                &[("SCHILY.xattr.security.capability", &[1u8; 20])],
            )
            .file(&deep, b"deep")
            .symlink("usr/lib64", "lib")
            .hardlink("usr/bin/ping6", "usr/bin/ping");
        for i in 0..5000 {
            layer.file(&format!("usr/share/doc/pkg{i}/copyright"), b"GPL");
        }
        let mut tar = layer.bytes();
        let mut gnu = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        gnu.append_data(&mut h, "g/".repeat(100) + "x", &b"gnu"[..])
            .expect("gnu long name");
        let gnu = gnu.into_inner().expect("gnu");
        // Both archives' entries in one stream: drop the first's end blocks.
        tar.truncate(tar.len() - 1024);
        tar.extend(gnu);
        assert_eq!(drain(&tar, &Limits::new()).expect("passes"), 5006);
    }
}
