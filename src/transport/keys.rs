//! Host keys and the files that say whom to trust, as ssh users know them.
//!
//! A key directory (default `/etc/rxmigrate`, else `--key-dir` or
//! `$RXMIGRATE_KEY_DIR`) holds:
//! - `key`: this host's X25519 private key, 64 hex digits (mode 0600);
//! - `key.pub`: its public key, `KEY COMMENT` on one line (to hand to peers);
//! - `authorized_peers` (receiver): the senders it accepts, one `KEY
//!   [COMMENT]` a line, `#` starts a comment line;
//! - `known_hosts` (sender): the receivers' keys, `HOST[,HOST...] KEY
//!   [COMMENT]` lines, HOST as given to `migrate` (a name or address, with or
//!   without `:PORT`).
//!
//! Files that others could have changed are refused: the directory and the
//! trust files must belong to the running user (or root) and not be writable
//! by group or others; the private key must not be readable by them either.
//! The checks are made on the opened file (fstat), so what is checked is
//! what is read.

use super::error::TransportError;
use snow::params::{DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Where keys live unless told otherwise.
pub const DEFAULT_KEY_DIR: &str = "/etc/rxmigrate";
/// The environment variable that moves the key directory.
pub const KEY_DIR_ENV: &str = "RXMIGRATE_KEY_DIR";

const KEY_LEN: usize = 32;
/// Trust files larger than this are not keys files.
const MAX_FILE: u64 = 1 << 20;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<[u8; KEY_LEN], String> {
    if s.len() != 2 * KEY_LEN || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "a key is {} hex digits, got {:?}",
            2 * KEY_LEN,
            s.chars().take(80).collect::<String>()
        ));
    }
    let mut out = [0u8; KEY_LEN];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// An X25519 public key (a host's identity).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        <[u8; KEY_LEN]>::try_from(b).ok().map(PublicKey)
    }

    /// 64 hex digits.
    pub fn parse(s: &str) -> Result<Self, String> {
        unhex(s.trim()).map(PublicKey)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// A short name for logs: `blake2s:` and the first 16 bytes of the
    /// key's BLAKE2s hash, in hex.
    pub fn fingerprint(&self) -> String {
        let Some(mut h) = DefaultResolver.resolve_hash(&HashChoice::Blake2s) else {
            // Built without BLAKE2s: the key itself names it.
            return format!("key:{}", hex(&self.0));
        };
        h.input(&self.0);
        let mut out = [0u8; 32];
        h.result(&mut out);
        format!("blake2s:{}", hex(&out[..16]))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// This host's static key pair. The private half is wiped on drop and never
/// printed.
pub struct Keypair {
    private: Zeroizing<[u8; KEY_LEN]>,
    public: PublicKey,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.public.fingerprint())
    }
}

fn noise_error(op: &'static str, source: snow::Error) -> TransportError {
    TransportError::Noise {
        peer: "this host".into(),
        op,
        source,
    }
}

impl Keypair {
    /// A fresh key pair from the system's random source.
    pub fn generate() -> Result<Self, TransportError> {
        let params = super::secure::params().map_err(|e| noise_error("parameters", e))?;
        let kp = snow::Builder::new(params)
            .generate_keypair()
            .map_err(|e| noise_error("generating a key", e))?;
        let private = Zeroizing::new(kp.private);
        Self::from_private(&private)
    }

    /// The pair of a private key (the public half is computed).
    pub fn from_private(private: &[u8]) -> Result<Self, TransportError> {
        let private: Zeroizing<[u8; KEY_LEN]> =
            Zeroizing::new(private.try_into().map_err(|_| TransportError::BadKey {
                what: "private key".into(),
                msg: format!("{} bytes, not {KEY_LEN}", private.len()),
            })?);
        let mut dh = DefaultResolver
            .resolve_dh(&DHChoice::Curve25519)
            .ok_or_else(|| TransportError::BadKey {
                what: "private key".into(),
                msg: "this build has no X25519".into(),
            })?;
        dh.set(&private[..]);
        let public = PublicKey::from_bytes(dh.pubkey()).ok_or_else(|| TransportError::BadKey {
            what: "private key".into(),
            msg: "X25519 gave a public key of the wrong size".into(),
        })?;
        Ok(Keypair { private, public })
    }

    pub fn public(&self) -> PublicKey {
        self.public
    }

    pub(super) fn private(&self) -> &[u8] {
        &self.private[..]
    }
}

/// The running user.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Refuse a file or directory others could have written (or, `private`,
/// read).
fn check_mode(path: &Path, md: &fs::Metadata, private: bool) -> Result<(), TransportError> {
    let user = euid();
    if md.uid() != user && md.uid() != 0 {
        return Err(TransportError::Owner {
            path: path.to_path_buf(),
            owner: md.uid(),
            user,
        });
    }
    if private && md.uid() != user {
        return Err(TransportError::Owner {
            path: path.to_path_buf(),
            owner: md.uid(),
            user,
        });
    }
    let mask = if private { 0o077 } else { 0o022 };
    if md.mode() & mask != 0 {
        return Err(TransportError::Mode {
            path: path.to_path_buf(),
            mode: md.mode() & 0o7777,
            private,
        });
    }
    Ok(())
}

/// Read a key or trust file after checking it; `None` when it does not
/// exist.
fn read_checked(path: &Path, private: bool) -> Result<Option<String>, TransportError> {
    let file_err = |source: io::Error| TransportError::File {
        path: path.to_path_buf(),
        source,
    };
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_err(e)),
    };
    let md = f.metadata().map_err(file_err)?;
    if !md.is_file() {
        return Err(file_err(io::Error::other("not a regular file")));
    }
    check_mode(path, &md, private)?;
    let mut text = String::new();
    f.take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(file_err)?;
    Ok(Some(text))
}

/// The lines of a key file that carry something: (line number, text).
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// A key directory.
#[derive(Debug, Clone)]
pub struct KeyDir {
    dir: PathBuf,
}

impl KeyDir {
    /// `--key-dir`, else `$RXMIGRATE_KEY_DIR`, else `/etc/rxmigrate`.
    pub fn resolve(given: Option<&Path>) -> Self {
        let dir = match given {
            Some(d) => d.to_path_buf(),
            None => match std::env::var_os(KEY_DIR_ENV) {
                Some(d) if !d.is_empty() => PathBuf::from(d),
                _ => PathBuf::from(DEFAULT_KEY_DIR),
            },
        };
        KeyDir { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
    pub fn key_file(&self) -> PathBuf {
        self.dir.join("key")
    }
    pub fn public_file(&self) -> PathBuf {
        self.dir.join("key.pub")
    }
    pub fn authorized_file(&self) -> PathBuf {
        self.dir.join("authorized_peers")
    }
    pub fn known_hosts_file(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    fn check_dir(&self) -> Result<(), TransportError> {
        match fs::metadata(&self.dir) {
            Ok(md) => check_mode(&self.dir, &md, false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(TransportError::Missing {
                path: self.dir.clone(),
                hint: "run `rxmigrate keygen` (or give --key-dir)".into(),
            }),
            Err(source) => Err(TransportError::File {
                path: self.dir.clone(),
                source,
            }),
        }
    }

    /// This host's key pair.
    pub fn load_key(&self) -> Result<Keypair, TransportError> {
        self.check_dir()?;
        let path = self.key_file();
        let text =
            Zeroizing::new(
                read_checked(&path, true)?.ok_or_else(|| TransportError::Missing {
                    path: path.clone(),
                    hint: format!(
                        "run `rxmigrate keygen --key-dir {}` to create this host's key",
                        self.dir.display()
                    ),
                })?,
            );
        let mut found = lines(&text);
        let (line, hexkey) = found.next().ok_or_else(|| TransportError::Parse {
            path: path.clone(),
            line: 1,
            msg: "no key in the file".into(),
        })?;
        let private = Zeroizing::new(unhex(hexkey).map_err(|_| TransportError::Parse {
            path: path.clone(),
            line,
            msg: format!("not a private key ({} hex digits expected)", 2 * KEY_LEN),
        })?);
        Keypair::from_private(&private[..])
    }

    /// The senders this receiver accepts.
    pub fn load_authorized(&self) -> Result<AuthorizedPeers, TransportError> {
        self.check_dir()?;
        let path = self.authorized_file();
        let text = read_checked(&path, false)?.ok_or_else(|| TransportError::Missing {
            path: path.clone(),
            hint: "put the public key of each sender (its key.pub) on a line of it".into(),
        })?;
        let peers = AuthorizedPeers::parse(&path, &text)?;
        if peers.keys.is_empty() {
            return Err(TransportError::Parse {
                path,
                line: 0,
                msg: "no key in the file: no sender could connect \
                      (put each sender's key.pub line in it)"
                    .into(),
            });
        }
        Ok(peers)
    }

    /// The receivers' keys this sender knows (empty when there is no file).
    pub fn load_known_hosts(&self) -> Result<KnownHosts, TransportError> {
        self.check_dir()?;
        let path = self.known_hosts_file();
        match read_checked(&path, false)? {
            Some(text) => KnownHosts::parse(&path, &text),
            None => Ok(KnownHosts {
                path,
                entries: Vec::new(),
            }),
        }
    }
}

/// The senders a receiver accepts.
#[derive(Debug, Clone)]
pub struct AuthorizedPeers {
    path: PathBuf,
    keys: Vec<(PublicKey, String)>,
}

impl AuthorizedPeers {
    pub fn parse(path: &Path, text: &str) -> Result<Self, TransportError> {
        let mut keys = Vec::new();
        for (line, l) in lines(text) {
            let (k, comment) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            let key = PublicKey::parse(k).map_err(|msg| TransportError::Parse {
                path: path.to_path_buf(),
                line,
                msg,
            })?;
            keys.push((key, comment.trim().to_string()));
        }
        Ok(AuthorizedPeers {
            path: path.to_path_buf(),
            keys,
        })
    }

    /// The comment of `key`'s line, if it is authorized.
    pub fn find(&self, key: &PublicKey) -> Option<&str> {
        self.keys
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, c)| c.as_str())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The keys a receiver may present, and where they were pinned.
#[derive(Debug, Clone)]
pub struct Pin {
    pub keys: Vec<PublicKey>,
    /// For messages: `--peer-key` or `FILE:LINE`.
    pub source: String,
}

impl Pin {
    pub fn accepts(&self, key: &PublicKey) -> bool {
        self.keys.contains(key)
    }
}

/// The receivers' keys a sender knows.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
    entries: Vec<(Vec<String>, PublicKey, usize)>,
}

impl KnownHosts {
    pub fn parse(path: &Path, text: &str) -> Result<Self, TransportError> {
        let mut entries = Vec::new();
        for (line, l) in lines(text) {
            let mut words = l.split_whitespace();
            let (Some(hosts), Some(k)) = (words.next(), words.next()) else {
                return Err(TransportError::Parse {
                    path: path.to_path_buf(),
                    line,
                    msg: "expected `HOST KEY [COMMENT]`".into(),
                });
            };
            let key = PublicKey::parse(k).map_err(|msg| TransportError::Parse {
                path: path.to_path_buf(),
                line,
                msg,
            })?;
            let hosts = hosts.split(',').map(str::to_ascii_lowercase).collect();
            entries.push((hosts, key, line));
        }
        Ok(KnownHosts {
            path: path.to_path_buf(),
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys pinned for `host` (as given to `migrate`, without its port)
    /// or for `host:port`.
    pub fn pin(&self, host: &str, port: u16) -> Option<Pin> {
        let host = host.to_ascii_lowercase();
        let names = [
            host.clone(),
            format!("{host}:{port}"),
            format!("[{host}]:{port}"),
        ];
        let mut keys = Vec::new();
        let mut at = Vec::new();
        for (hosts, key, line) in &self.entries {
            if hosts.iter().any(|h| names.contains(h)) {
                keys.push(*key);
                at.push(line.to_string());
            }
        }
        (!keys.is_empty()).then(|| Pin {
            keys,
            source: format!("{} line {}", self.path.display(), at.join(",")),
        })
    }
}

/// Write a new key pair into `dir` (created 0700 if missing): `key` (0600)
/// and `key.pub` (0644, `KEY COMMENT`). Refuses to replace a key unless
/// `force`.
pub fn keygen(dir: &Path, comment: &str, force: bool) -> Result<PublicKey, TransportError> {
    let file_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source: io::Error| TransportError::File { path, source }
    };
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(file_err(dir))?;
    }
    let kd = KeyDir {
        dir: dir.to_path_buf(),
    };
    kd.check_dir()?;
    let key_path = kd.key_file();
    let pub_path = kd.public_file();
    if !force {
        for p in [&key_path, &pub_path] {
            if p.symlink_metadata().is_ok() {
                return Err(TransportError::Exists { path: p.clone() });
            }
        }
    }
    let kp = Keypair::generate()?;
    let write = |path: &Path, mode: u32, text: &str| -> Result<(), TransportError> {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_err(path)(e)),
        }
        // create_new: never through a symlink someone put there meanwhile.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(file_err(path))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(file_err(path))
    };
    let private = Zeroizing::new(format!("{}\n", hex(kp.private())));
    write(&key_path, 0o600, &private)?;
    let comment = comment.split_whitespace().collect::<Vec<_>>().join("_");
    write(
        &pub_path,
        0o644,
        &format!("{} {comment}\n", kp.public()).replace(" \n", "\n"),
    )?;
    Ok(kp.public())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keygen_writes_a_private_key_only_we_can_read_and_loads_it_back() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("keys");
        let public = keygen(&dir, "host a", false).unwrap();
        let kd = KeyDir::resolve(Some(&dir));
        let md = fs::metadata(kd.key_file()).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let kp = kd.load_key().unwrap();
        assert_eq!(kp.public(), public);
        let pubtext = fs::read_to_string(kd.public_file()).unwrap();
        assert_eq!(pubtext, format!("{public} host_a\n"));
        // The public file is an authorized_peers line.
        let peers = AuthorizedPeers::parse(Path::new("x"), &pubtext).unwrap();
        assert_eq!(peers.find(&public), Some("host_a"));

        let e = keygen(&dir, "again", false).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        let other = keygen(&dir, "again", true).unwrap();
        assert_ne!(other, public);
        assert_eq!(kd.load_key().unwrap().public(), other);
    }

    #[test]
    fn a_key_group_or_others_can_read_is_refused_with_the_fix() {
        let d = tempfile::tempdir().unwrap();
        keygen(d.path(), "h", false).unwrap();
        let kd = KeyDir::resolve(Some(d.path()));
        fs::set_permissions(kd.key_file(), fs::Permissions::from_mode(0o640)).unwrap();
        let e = kd.load_key().unwrap_err().to_string();
        assert!(e.contains(&kd.key_file().display().to_string()), "{e}");
        assert!(e.contains("chmod 600"), "{e}");

        fs::set_permissions(kd.key_file(), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(
            kd.authorized_file(),
            format!("{}\n", kd.load_key().unwrap().public()),
        )
        .unwrap();
        fs::set_permissions(kd.authorized_file(), fs::Permissions::from_mode(0o666)).unwrap();
        let e = kd.load_authorized().unwrap_err().to_string();
        assert!(
            e.contains("authorized_peers") && e.contains("chmod go-w"),
            "{e}"
        );
        fs::set_permissions(kd.authorized_file(), fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(kd.load_authorized().unwrap().len(), 1);

        // A directory others can write is refused as well.
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let e = kd.load_key().unwrap_err().to_string();
        assert!(e.contains("chmod go-w"), "{e}");
    }

    #[test]
    fn trust_files_parse_with_comments_and_name_bad_lines() {
        let k1 = Keypair::generate().unwrap().public();
        let k2 = Keypair::generate().unwrap().public();
        let text = format!("# senders\n\n{k1} alpha host\n  {k2}\n");
        let p = AuthorizedPeers::parse(Path::new("ap"), &text).unwrap();
        assert_eq!(p.find(&k1), Some("alpha host"));
        assert_eq!(p.find(&k2), Some(""));
        let e = AuthorizedPeers::parse(Path::new("ap"), "# x\nnot-a-key\n").unwrap_err();
        assert!(e.to_string().starts_with("ap:2:"), "{e}");

        let kh = KnownHosts::parse(
            Path::new("kh"),
            &format!("# receivers\nHostB,10.0.0.2 {k1} b\nhostc:9000 {k2}\n"),
        )
        .unwrap();
        assert_eq!(kh.pin("hostb", 8002).unwrap().keys, vec![k1]);
        assert_eq!(kh.pin("10.0.0.2", 1).unwrap().keys, vec![k1]);
        assert!(kh.pin("hostc", 8002).is_none());
        assert_eq!(kh.pin("hostc", 9000).unwrap().keys, vec![k2]);
        assert!(KnownHosts::parse(Path::new("kh"), "lonely\n").is_err());
    }

    #[test]
    fn public_keys_round_trip_and_fingerprints_differ() {
        let k = Keypair::generate().unwrap();
        let p = k.public();
        assert_eq!(PublicKey::parse(&p.to_string()).unwrap(), p);
        assert!(PublicKey::parse("abcd").is_err());
        let f = p.fingerprint();
        assert!(f.starts_with("blake2s:") && f.len() == 8 + 32, "{f}");
        assert_ne!(f, Keypair::generate().unwrap().public().fingerprint());
        // The private key never shows in Debug.
        assert!(!format!("{k:?}").contains(&hex(k.private())));
        // Deriving the public half from the private one agrees with snow.
        assert_eq!(Keypair::from_private(k.private()).unwrap().public(), p);
    }
}
