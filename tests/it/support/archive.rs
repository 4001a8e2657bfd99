//! Hand-rolled tar and zip writers, so tests can build any archive, including hostile ones that
//! well-behaved writers refuse to produce (`..` names, lying sizes, duplicate members).

use std::io::Write;

use flate2::Compression;
use flate2::write::{DeflateEncoder, GzEncoder};

/// One tar member, with every header field a test may want to vary.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: Vec<u8>,
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub uname: String,
    pub gname: String,
    pub link: Vec<u8>,
    pub data: Vec<u8>,
    /// Size written in the header, when it should differ from `data.len()`.
    pub header_size: Option<u64>,
}

impl Member {
    fn new(name: &[u8], typeflag: u8, data: &[u8]) -> Self {
        Self {
            name: name.to_vec(),
            typeflag,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime: 1_700_000_000,
            uname: "dev".into(),
            gname: "dev".into(),
            link: Vec::new(),
            data: data.to_vec(),
            header_size: None,
        }
    }

    pub fn file(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> Self {
        Self::new(name.as_ref(), b'0', data.as_ref())
    }

    pub fn exec(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> Self {
        Self { mode: 0o755, ..Self::file(name, data) }
    }

    pub fn dir(name: impl AsRef<[u8]>) -> Self {
        Self { mode: 0o755, ..Self::new(name.as_ref(), b'5', b"") }
    }

    pub fn symlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        Self { link: target.as_ref().to_vec(), mode: 0o777, ..Self::new(name.as_ref(), b'2', b"") }
    }

    pub fn hardlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        Self { link: target.as_ref().to_vec(), ..Self::new(name.as_ref(), b'1', b"") }
    }

    pub fn typed(name: impl AsRef<[u8]>, typeflag: u8) -> Self {
        Self::new(name.as_ref(), typeflag, b"")
    }

    /// A PAX extended header member ('x') with these records.
    pub fn pax(records: &[(&str, &[u8])]) -> Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let body_len = k.len() + v.len() + 3; // ' ', '=', '\n'
            let mut len = body_len + body_len.to_string().len();
            if len.to_string().len() != body_len.to_string().len() {
                len += 1;
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        Self::new(b"./PaxHeaders/x", b'x', &data)
    }

    /// A GNU long-name member ('L') carrying `name`.
    pub fn gnu_long_name(name: &[u8]) -> Self {
        let mut data = name.to_vec();
        data.push(0);
        Self::new(b"././@LongLink", b'L', &data)
    }
}

fn octal(field: &mut [u8], value: u64) {
    let s = format!("{:0width$o}", value, width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[field.len() - 1] = 0;
}

/// The 512-byte ustar header of `m`. Names longer than 100 bytes are truncated: use
/// [`Member::gnu_long_name`] or [`Member::pax`] before the member for those.
pub fn header(m: &Member) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = m.name.len().min(100);
    h[..n].copy_from_slice(&m.name[..n]);
    octal(&mut h[100..108], u64::from(m.mode));
    octal(&mut h[108..116], m.uid);
    octal(&mut h[116..124], m.gid);
    octal(&mut h[124..136], m.header_size.unwrap_or(m.data.len() as u64));
    octal(&mut h[136..148], m.mtime);
    h[156] = m.typeflag;
    let l = m.link.len().min(100);
    h[157..157 + l].copy_from_slice(&m.link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let u = m.uname.len().min(31);
    h[265..265 + u].copy_from_slice(&m.uname.as_bytes()[..u]);
    let g = m.gname.len().min(31);
    h[297..297 + g].copy_from_slice(&m.gname.as_bytes()[..g]);
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// Appends one member (header, data, padding).
pub fn push_member(out: &mut Vec<u8>, m: &Member) {
    out.extend_from_slice(&header(m));
    out.extend_from_slice(&m.data);
    let pad = (512 - m.data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

/// A tar of `members`, with the end-of-archive marker. Long names get GNU long-name members.
pub fn tar(members: &[Member]) -> Vec<u8> {
    let mut out = tar_without_end(members);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Like [`tar`] but without the end-of-archive marker.
pub fn tar_without_end(members: &[Member]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        if m.name.len() > 100 && m.typeflag != b'L' {
            push_member(&mut out, &Member::gnu_long_name(&m.name));
        }
        push_member(&mut out, m);
    }
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::new(6));
    enc.write_all(data).expect("gzip in memory");
    enc.finish().expect("gzip in memory")
}

/// One zip entry for [`zip`].
#[derive(Debug, Clone)]
pub struct ZipMember {
    pub name: Vec<u8>,
    pub data: Vec<u8>,
    /// 0 stored, 8 deflate, anything else is written as is with stored bytes.
    pub method: u16,
    /// Host system in "version made by" (3 Unix, 0 DOS).
    pub system: u8,
    pub external_attributes: u32,
    pub flags: u16,
    pub dos_time: u16,
    pub dos_date: u16,
    pub extra: Vec<u8>,
    pub crc_override: Option<u32>,
    pub size_override: Option<u32>,
}

impl ZipMember {
    pub fn file(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>, unix_mode: u32) -> Self {
        Self {
            name: name.as_ref().to_vec(),
            data: data.as_ref().to_vec(),
            method: 8,
            system: 3,
            external_attributes: (0o100_000 | unix_mode) << 16,
            flags: 0,
            dos_time: 0x6b2d,
            dos_date: 0x5a37,
            extra: Vec::new(),
            crc_override: None,
            size_override: None,
        }
    }

    pub fn dos(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> Self {
        Self { system: 0, external_attributes: 0x20, ..Self::file(name, data, 0) }
    }
}

/// A zip of `members`, written byte by byte (no validation).
pub fn zip(members: &[ZipMember]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for m in members {
        let crc = m.crc_override.unwrap_or_else(|| crc32fast::hash(&m.data));
        let stored = if m.method == 8 {
            let mut enc = DeflateEncoder::new(Vec::new(), Compression::new(6));
            enc.write_all(&m.data).expect("deflate in memory");
            enc.finish().expect("deflate in memory")
        } else {
            m.data.clone()
        };
        let size = m.size_override.unwrap_or(m.data.len() as u32);
        let offset = out.len() as u32;
        let mut local = Vec::new();
        local.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        local.extend_from_slice(&20u16.to_le_bytes());
        local.extend_from_slice(&m.flags.to_le_bytes());
        local.extend_from_slice(&m.method.to_le_bytes());
        local.extend_from_slice(&m.dos_time.to_le_bytes());
        local.extend_from_slice(&m.dos_date.to_le_bytes());
        local.extend_from_slice(&crc.to_le_bytes());
        local.extend_from_slice(&(stored.len() as u32).to_le_bytes());
        local.extend_from_slice(&size.to_le_bytes());
        local.extend_from_slice(&(m.name.len() as u16).to_le_bytes());
        local.extend_from_slice(&(m.extra.len() as u16).to_le_bytes());
        local.extend_from_slice(&m.name);
        local.extend_from_slice(&m.extra);
        out.extend_from_slice(&local);
        out.extend_from_slice(&stored);

        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&(u16::from(m.system) << 8 | 20).to_le_bytes());
        central.extend_from_slice(&local[4..30]);
        central.extend_from_slice(&0u16.to_le_bytes()); // comment length
        central.extend_from_slice(&0u16.to_le_bytes()); // disk
        central.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        central.extend_from_slice(&m.external_attributes.to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(&m.name);
        central.extend_from_slice(&m.extra);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}
