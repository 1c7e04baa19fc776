//! `spin:key-value/key-value@3.0.0`, durable on local disk, with Spin's access model.
//!
//! **Access.** As in Spin, a component may open only the stores granted to it (spin.toml's
//! `key_value_stores = [...]`, here [`crate::HarnessConfig::key_value_stores`]). Opening any
//! other label is `access-denied`, whether or not such a store exists, so a guest cannot probe
//! for stores. A granted label with no store behind it is `no-such-store`; the harness defines
//! a store for every granted label (Spin refuses to start an app granting an undefined store),
//! so through [`crate::HarnessConfig`] that case does not arise.
//!
//! **Storage.** Every store is a directory `<dir>/<label>/` holding one file per key, named
//! `k` + the hex of the key's UTF-8 bytes (any key, including `""`, maps to a portable file
//! name; 127 bytes at most, which keeps the name within the usual 255-byte limit). A value is
//! written to a uniquely named temporary file under `<dir>/<label>/.tmp/`, fsynced, then
//! renamed over the key's file and the directory fsynced: readers see the old or the new value,
//! never a partial one, and a crash cannot leave half a value behind. Concurrent `set`/`delete`
//! of one key therefore race only on which rename or unlink lands last. All stores of a harness
//! share one [`KeyValue`], and a new harness on the same directory sees the same data. Without a
//! directory the data lives in a temporary directory removed with the harness.
//!
//! File I/O runs on tokio's blocking pool so a slow disk does not stall other guest tasks.
//!
//! **In memory.** A label may instead be held in memory ([`KeyValue::with_memory`]), as Spin
//! holds a `type = "spin"` store configured without a `path` (an in-memory SQLite database
//! behind one mutex, shared by every instance of the app, gone when the process exits). Spin
//! answers those calls on the calling thread (`block_in_place`); so does the harness.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, bail};
use wasmtime::component::{
    Accessor, FutureReader, HasData, Linker, Resource, ResourceTable, StreamReader,
};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/key-value.wit",
        world: "harness-key-value",
        // Host calls trap (rather than return a guest error) on an invalid resource handle.
        imports: { default: trappable },
        with: {
            "spin:key-value/key-value.store": super::OpenStore,
        },
    });
}

use bindings::spin::key_value::key_value as kv;
pub use kv::Error;

/// Longest key, in bytes: `k` + 2 hex digits per byte must fit a 255-byte file name.
pub const MAX_KEY_LEN: usize = 127;
/// Where values are staged before the atomic rename; not a valid key file name.
const TMP_DIR: &str = ".tmp";

/// The key-value stores of one harness, shared by every wasmtime store (instance) it creates.
#[derive(Clone, Debug, Default)]
pub struct KeyValue {
    /// Labels the component may open.
    granted: Arc<BTreeSet<String>>,
    /// Stores that exist, by label.
    stores: Arc<BTreeMap<String, Arc<Backing>>>,
    /// Keeps the fallback temporary directory alive as long as any clone.
    _temp: Option<Arc<tempfile::TempDir>>,
}

impl KeyValue {
    /// Stores for the `granted` labels under `dir` (created if missing), or under a temporary
    /// directory when `dir` is `None` and something is granted. Labels must be usable as a
    /// directory name: 1-64 ASCII letters, digits, `_` or `-`, not starting with `-`.
    pub fn new(dir: Option<&Path>, granted: &[String]) -> anyhow::Result<Self> {
        Self::with_defined(dir, granted, granted, &[])
    }

    /// [`KeyValue::new`] with the `memory` labels (granted ones) held in memory instead.
    pub fn with_memory(
        dir: Option<&Path>,
        granted: &[String],
        memory: &[String],
    ) -> anyhow::Result<Self> {
        Self::with_defined(dir, granted, granted, memory)
    }

    /// Like [`KeyValue::new`] but with the set of existing stores given separately (Spin's
    /// runtime config), so a granted label may lack a store.
    fn with_defined(
        dir: Option<&Path>,
        granted: &[String],
        defined: &[String],
        memory: &[String],
    ) -> anyhow::Result<Self> {
        for label in granted.iter().chain(defined) {
            validate_label(label)
                .map_err(|e| anyhow::anyhow!("invalid key-value store label {label:?}: {e}"))?;
        }
        let (root, temp) = match dir {
            Some(dir) => (dir.to_path_buf(), None),
            None if defined.is_empty() => (PathBuf::new(), None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("harness-kv-")
                    .tempdir()
                    .context("creating a temporary key-value directory")?;
                (temp.path().to_path_buf(), Some(Arc::new(temp)))
            }
        };
        let mut stores = BTreeMap::new();
        for label in defined {
            let store = if memory.contains(label) {
                Backing::Memory(std::sync::Mutex::default())
            } else {
                Backing::Files(
                    FileStore::open(root.join(label))
                        .with_context(|| format!("opening key-value store {label:?}"))?,
                )
            };
            stores.insert(label.clone(), Arc::new(store));
        }
        Ok(Self {
            granted: Arc::new(granted.iter().cloned().collect()),
            stores: Arc::new(stores),
            _temp: temp,
        })
    }

    /// What the guest's `store.open(label)` gets, before it becomes a resource.
    pub fn open(&self, label: &str) -> Result<OpenStore, Error> {
        if !self.granted.contains(label) {
            return Err(Error::AccessDenied);
        }
        match self.stores.get(label) {
            Some(store) => Ok(OpenStore(store.clone())),
            None => Err(Error::NoSuchStore),
        }
    }
}

/// Spin-style label check, strict enough to make the label a safe directory name.
fn validate_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() || label.len() > 64 {
        return Err("must be 1 to 64 characters long");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("may contain only ASCII letters, digits, '_' and '-'");
    }
    if label.starts_with('-') {
        return Err("must not start with '-'");
    }
    Ok(())
}

/// An opened store: what a guest `store` handle refers to in the resource table.
#[derive(Clone, Debug)]
pub struct OpenStore(Arc<Backing>);

/// Where a store's values live.
#[derive(Debug)]
enum Backing {
    Files(FileStore),
    Memory(std::sync::Mutex<BTreeMap<String, Vec<u8>>>),
}

impl Backing {
    fn memory(
        m: &std::sync::Mutex<BTreeMap<String, Vec<u8>>>,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A panic while holding it cannot leave a half-written map: every operation is one
        // insert, remove or read.
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        match self {
            Backing::Files(f) => f.get(key),
            Backing::Memory(m) => Ok(Self::memory(m).get(key).cloned()),
        }
    }

    fn exists(&self, key: &str) -> Result<bool, Error> {
        match self {
            Backing::Files(f) => f.exists(key),
            Backing::Memory(m) => Ok(Self::memory(m).contains_key(key)),
        }
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        match self {
            Backing::Files(f) => f.set(key, value),
            Backing::Memory(m) => {
                Self::memory(m).insert(key.to_string(), value.to_vec());
                Ok(())
            }
        }
    }

    fn delete(&self, key: &str) -> Result<(), Error> {
        match self {
            Backing::Files(f) => f.delete(key),
            Backing::Memory(m) => {
                Self::memory(m).remove(key);
                Ok(())
            }
        }
    }

    /// Spin's SQLite compare-and-swap (`UPDATE … WHERE value = :old`): writes `new` if `key`
    /// still holds `old`. With `old` = none (the key was absent when read) Spin writes
    /// unconditionally (an upsert), and so does this.
    fn swap(&self, key: &str, old: Option<&[u8]>, new: &[u8]) -> Result<bool, Error> {
        match self {
            Backing::Files(f) => {
                let _atomic = f
                    .atomic
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match old {
                    Some(old) if f.get(key)?.as_deref() != Some(old) => Ok(false),
                    _ => f.set(key, new).map(|()| true),
                }
            }
            Backing::Memory(m) => {
                let mut map = Self::memory(m);
                match old {
                    Some(old) if map.get(key).map(Vec::as_slice) != Some(old) => Ok(false),
                    _ => {
                        map.insert(key.to_string(), new.to_vec());
                        Ok(true)
                    }
                }
            }
        }
    }

    /// Spin's SQLite increment: the value is an i64 in 8 little-endian bytes, absent is 0.
    /// A value of another length is an error here (Spin's SQLite store panics on it).
    fn increment(&self, key: &str, delta: i64) -> Result<i64, Error> {
        let add = |old: Option<Vec<u8>>| -> Result<(i64, Vec<u8>), Error> {
            let n = match old {
                None => 0,
                Some(v) => i64::from_le_bytes(v.try_into().map_err(|_| {
                    Error::Other(format!("value of {key:?} is not an 8-byte integer"))
                })?),
            };
            let sum = n.wrapping_add(delta);
            Ok((sum, sum.to_le_bytes().to_vec()))
        };
        match self {
            Backing::Files(f) => {
                let _atomic = f
                    .atomic
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let (sum, bytes) = add(f.get(key)?)?;
                f.set(key, &bytes)?;
                Ok(sum)
            }
            Backing::Memory(m) => {
                let mut map = Self::memory(m);
                let (sum, bytes) = add(map.get(key).cloned())?;
                map.insert(key.to_string(), bytes);
                Ok(sum)
            }
        }
    }

    fn keys(&self) -> Result<Vec<String>, Error> {
        match self {
            Backing::Files(f) => f.keys(),
            Backing::Memory(m) => Ok(Self::memory(m).keys().cloned().collect()),
        }
    }
}

impl OpenStore {
    /// The value under `key`, if any.
    pub async fn get(&self, key: String) -> Result<Option<Vec<u8>>, Error> {
        self.blocking(move |s| s.get(&key)).await
    }

    /// Durably stores `value` under `key`.
    pub async fn set(&self, key: String, value: Vec<u8>) -> Result<(), Error> {
        self.blocking(move |s| s.set(&key, &value)).await
    }

    /// Durably removes `key` (no error if it is absent).
    pub async fn delete(&self, key: String) -> Result<(), Error> {
        self.blocking(move |s| s.delete(&key)).await
    }

    /// Whether `key` has a value.
    pub async fn exists(&self, key: String) -> Result<bool, Error> {
        self.blocking(move |s| s.exists(&key)).await
    }

    /// All keys, sorted.
    pub async fn keys(&self) -> Result<Vec<String>, Error> {
        self.blocking(Backing::keys).await
    }

    /// See [`Backing::swap`].
    pub async fn swap(
        &self,
        key: String,
        old: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, Error> {
        self.blocking(move |s| s.swap(&key, old.as_deref(), &new))
            .await
    }

    /// See [`Backing::increment`].
    pub async fn increment(&self, key: String, delta: i64) -> Result<i64, Error> {
        self.blocking(move |s| s.increment(&key, delta)).await
    }

    async fn blocking<R: Send + 'static>(
        &self,
        op: impl FnOnce(&Backing) -> Result<R, Error> + Send + 'static,
    ) -> Result<R, Error> {
        let store = self.0.clone();
        if matches!(*store, Backing::Memory(_)) {
            // As Spin's SQLite store: on the calling thread, inside `block_in_place` (which
            // hands this worker's other tasks, the instance's included, to another thread).
            return match tokio::runtime::Handle::current().runtime_flavor() {
                tokio::runtime::RuntimeFlavor::CurrentThread => op(&store),
                _ => tokio::task::block_in_place(|| op(&store)),
            };
        }
        tokio::task::spawn_blocking(move || op(&store))
            .await
            .map_err(|e| Error::Other(format!("key-value I/O task failed: {e}")))?
    }
}

/// One store's directory. Methods block on file I/O.
#[derive(Debug)]
struct FileStore {
    dir: PathBuf,
    tmp: PathBuf,
    /// Makes temporary file names unique within the process; the pid covers other processes.
    next_tmp: AtomicU64,
    /// Held by a compare-and-swap or an increment from its read to its write, as Spin's
    /// SQLite store holds its one connection (plain `set`/`delete` do not wait for it).
    atomic: std::sync::Mutex<()>,
}

impl FileStore {
    fn open(dir: PathBuf) -> anyhow::Result<Self> {
        let tmp = dir.join(TMP_DIR);
        fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        // Leftovers of a crash mid-`set`: never renamed, so never visible; reclaim the space.
        for entry in fs::read_dir(&tmp).with_context(|| format!("reading {}", tmp.display()))? {
            let path = entry?.path();
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                bail!("removing stale {}: {e}", path.display());
            }
        }
        Ok(Self {
            dir,
            tmp,
            next_tmp: AtomicU64::new(0),
            atomic: std::sync::Mutex::new(()),
        })
    }

    fn path(&self, key: &str) -> Result<PathBuf, Error> {
        if key.len() > MAX_KEY_LEN {
            return Err(Error::Other(format!(
                "key of {} bytes is longer than the harness's limit of {MAX_KEY_LEN}",
                key.len()
            )));
        }
        Ok(self.dir.join(format!("k{}", hex::encode(key))))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        match fs::read(self.path(key)?) {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("reading", key, &e)),
        }
    }

    fn exists(&self, key: &str) -> Result<bool, Error> {
        self.path(key)?
            .try_exists()
            .map_err(|e| io_error("checking", key, &e))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        let path = self.path(key)?;
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("{}-{n}", std::process::id()));
        let write = || -> io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(value)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            self.sync_dir()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_error("writing", key, &e)
        })
    }

    fn delete(&self, key: &str) -> Result<(), Error> {
        match fs::remove_file(self.path(key)?) {
            Ok(()) => self.sync_dir().map_err(|e| io_error("deleting", key, &e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("deleting", key, &e)),
        }
    }

    fn keys(&self) -> Result<Vec<String>, Error> {
        let list = || -> io::Result<Vec<String>> {
            let mut keys = Vec::new();
            for entry in fs::read_dir(&self.dir)? {
                // Anything that is not a key file (the staging directory, foreign files) is
                // skipped rather than failing the listing.
                if let Some(key) = entry?
                    .file_name()
                    .to_str()
                    .and_then(|name| name.strip_prefix('k'))
                    .and_then(|hex| hex::decode(hex).ok())
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                {
                    keys.push(key);
                }
            }
            keys.sort_unstable();
            Ok(keys)
        };
        list().map_err(|e| Error::Other(format!("listing keys: {e}")))
    }

    /// Makes a rename or unlink in the store directory durable.
    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

fn io_error(doing: &str, key: &str, e: &io::Error) -> Error {
    Error::Other(format!("{doing} key {key:?}: {e}"))
}

/// What the host functions see of a wasmtime store: its resource table and the stores.
pub struct KeyValueView<'a> {
    pub table: &'a mut ResourceTable,
    pub key_value: &'a KeyValue,
}

/// `HasData` marker for the key-value host functions.
pub struct SpinKeyValue;

impl HasData for SpinKeyValue {
    type Data<'a> = KeyValueView<'a>;
}

impl kv::Host for KeyValueView<'_> {}

impl kv::HostStore for KeyValueView<'_> {
    fn drop(&mut self, store: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

/// The store behind a guest handle; an invalid handle traps.
fn lookup<T>(
    accessor: &Accessor<T, SpinKeyValue>,
    store: &Resource<OpenStore>,
) -> wasmtime::Result<OpenStore> {
    accessor.with(|mut access| Ok(access.get().table.get(store)?.clone()))
}

impl<T> kv::HostStoreWithStore<T> for SpinKeyValue {
    async fn open(
        accessor: &Accessor<T, Self>,
        label: String,
    ) -> wasmtime::Result<Result<Resource<OpenStore>, Error>> {
        accessor.with(|mut access| {
            let view = access.get();
            match view.key_value.open(&label) {
                Ok(store) => Ok(Ok(view.table.push(store)?)),
                Err(e) => Ok(Err(e)),
            }
        })
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        store: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        Ok(lookup(accessor, &store)?.get(key).await)
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        store: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        Ok(lookup(accessor, &store)?.set(key, value).await)
    }

    async fn delete(
        accessor: &Accessor<T, Self>,
        store: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        Ok(lookup(accessor, &store)?.delete(key).await)
    }

    async fn exists(
        accessor: &Accessor<T, Self>,
        store: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        Ok(lookup(accessor, &store)?.exists(key).await)
    }

    async fn get_keys(
        accessor: &Accessor<T, Self>,
        store: Resource<OpenStore>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), Error>>)> {
        // The listing is read up front: a store's key set is small here, and a snapshot keeps
        // the stream consistent while other tasks write.
        let (keys, result) = match lookup(accessor, &store)?.keys().await {
            Ok(keys) => (keys, Ok(())),
            Err(e) => (Vec::new(), Err(e)),
        };
        accessor.with(|mut access| {
            let keys = StreamReader::new(&mut access, keys)?;
            let result = FutureReader::new(
                &mut access,
                std::future::ready(Ok::<_, wasmtime::Error>(result)),
            )?;
            Ok((keys, result))
        })
    }
}

/// Links `spin:key-value/key-value@3.0.0`; `get` gives each wasmtime store's table and stores.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> KeyValueView<'_>,
) -> wasmtime::Result<()> {
    kv::add_to_linker::<T, SpinKeyValue>(linker, get)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap()
    }

    #[test]
    fn set_get_exists_delete_keys() {
        let dir = tempfile::tempdir().unwrap();
        let kv = KeyValue::new(Some(dir.path()), &labels(&["default"])).unwrap();
        rt().block_on(async {
            let s = kv.open("default").unwrap();
            assert_eq!(s.get("a".into()).await.unwrap(), None);
            assert!(!s.exists("a".into()).await.unwrap());
            s.set("a".into(), b"1".to_vec()).await.unwrap();
            s.set(String::new(), Vec::new()).await.unwrap();
            s.set("outbox/ü 7".into(), vec![0, 255, 10]).await.unwrap();
            s.set("a".into(), b"22".to_vec()).await.unwrap();
            assert_eq!(s.get("a".into()).await.unwrap(), Some(b"22".to_vec()));
            assert_eq!(s.get(String::new()).await.unwrap(), Some(Vec::new()));
            assert_eq!(
                s.get("outbox/ü 7".into()).await.unwrap(),
                Some(vec![0, 255, 10])
            );
            assert!(s.exists(String::new()).await.unwrap());
            assert_eq!(s.keys().await.unwrap(), labels(&["", "a", "outbox/ü 7"]));
            s.delete("a".into()).await.unwrap();
            s.delete("a".into()).await.unwrap(); // absent: still fine
            assert_eq!(s.get("a".into()).await.unwrap(), None);
            assert!(!s.exists("a".into()).await.unwrap());
            assert_eq!(s.keys().await.unwrap(), labels(&["", "outbox/ü 7"]));
        });
    }

    #[test]
    fn swap_and_increment_behave_as_spins_sqlite_store_in_files_and_memory() {
        let dir = tempfile::tempdir().unwrap();
        let grant = labels(&["default", "mem"]);
        let kv = KeyValue::with_memory(Some(dir.path()), &grant, &labels(&["mem"])).unwrap();
        rt().block_on(async {
            for label in ["default", "mem"] {
                let s = kv.open(label).unwrap();
                // Read as absent: Spin's swap then writes whatever is there (an upsert).
                assert!(s.swap("k".into(), None, b"a".to_vec()).await.unwrap());
                assert!(s.swap("k".into(), None, b"b".to_vec()).await.unwrap());
                // Read as "a", but "b" is there: refused, nothing written.
                assert!(
                    !s.swap("k".into(), Some(b"a".to_vec()), b"c".to_vec())
                        .await
                        .unwrap()
                );
                assert_eq!(
                    s.get("k".into()).await.unwrap(),
                    Some(b"b".to_vec()),
                    "{label}"
                );
                assert!(
                    s.swap("k".into(), Some(b"b".to_vec()), b"d".to_vec())
                        .await
                        .unwrap()
                );
                assert_eq!(
                    s.get("k".into()).await.unwrap(),
                    Some(b"d".to_vec()),
                    "{label}"
                );
                // Increments: absent is 0, 8 little-endian bytes; any other value an error.
                assert_eq!(s.increment("n".into(), 1).await.unwrap(), 1);
                assert_eq!(s.increment("n".into(), 5).await.unwrap(), 6);
                assert_eq!(
                    s.get("n".into()).await.unwrap(),
                    Some(6i64.to_le_bytes().to_vec())
                );
                assert!(s.increment("k".into(), 1).await.is_err(), "{label}");
            }
        });
    }

    #[test]
    fn data_survives_reopening_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let grant = labels(&["default", "other"]);
        rt().block_on(async {
            let kv = KeyValue::new(Some(dir.path()), &grant).unwrap();
            let s = kv.open("default").unwrap();
            s.set("kept".into(), b"v".to_vec()).await.unwrap();
            s.set("gone".into(), b"x".to_vec()).await.unwrap();
            s.delete("gone".into()).await.unwrap();
            kv.open("other")
                .unwrap()
                .set("kept".into(), b"other".to_vec())
                .await
                .unwrap();
        });
        // A crash mid-set leaves a staged file; it must not show up as data.
        fs::write(
            dir.path().join("default").join(TMP_DIR).join("1-0"),
            b"half",
        )
        .unwrap();
        rt().block_on(async {
            let kv = KeyValue::new(Some(dir.path()), &grant).unwrap();
            let s = kv.open("default").unwrap();
            assert_eq!(s.get("kept".into()).await.unwrap(), Some(b"v".to_vec()));
            assert_eq!(s.get("gone".into()).await.unwrap(), None);
            assert_eq!(s.keys().await.unwrap(), labels(&["kept"]));
            // Stores are separate namespaces.
            let o = kv.open("other").unwrap();
            assert_eq!(o.get("kept".into()).await.unwrap(), Some(b"other".to_vec()));
        });
        let staged = fs::read_dir(dir.path().join("default").join(TMP_DIR)).unwrap();
        assert_eq!(staged.count(), 0, "stale staged file not reclaimed");
    }

    #[test]
    fn every_handle_sees_the_same_data() {
        let kv = KeyValue::new(None, &labels(&["default"])).unwrap();
        let clone = kv.clone();
        rt().block_on(async {
            kv.open("default")
                .unwrap()
                .set("k".into(), b"v".to_vec())
                .await
                .unwrap();
            let other = clone.open("default").unwrap();
            assert_eq!(other.get("k".into()).await.unwrap(), Some(b"v".to_vec()));
        });
    }

    #[test]
    fn concurrent_writers_leave_one_whole_value() {
        let kv = KeyValue::new(None, &labels(&["default"])).unwrap();
        let s = kv.open("default").unwrap();
        let values: Vec<Vec<u8>> = (0..16u8).map(|i| vec![i; 64 * 1024]).collect();
        rt().block_on(async {
            let mut tasks = Vec::new();
            for (i, v) in values.iter().enumerate() {
                let (s, v) = (s.clone(), v.clone());
                tasks.push(tokio::spawn(async move {
                    if i % 4 == 3 {
                        s.delete("k".into()).await
                    } else {
                        s.set("k".into(), v).await
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            // `None` is fine too: a delete landed last.
            if let Some(v) = s.get("k".into()).await.unwrap() {
                assert!(values.contains(&v), "torn value of {} bytes", v.len());
            }
            // Nothing is left staged.
            let Backing::Files(files) = &*s.0 else {
                panic!("a file store")
            };
            assert_eq!(fs::read_dir(&files.tmp).unwrap().count(), 0);
        });
    }

    #[test]
    fn memory_stores_are_shared_by_every_opener_and_keep_nothing_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let kv = KeyValue::with_memory(
            Some(dir.path()),
            &labels(&["default", "velocity"]),
            &labels(&["velocity"]),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = kv.open("velocity").unwrap();
            a.set("vel/x".into(), b"1".to_vec()).await.unwrap();
            let b = kv.clone().open("velocity").unwrap();
            assert_eq!(b.get("vel/x".into()).await.unwrap(), Some(b"1".to_vec()));
            assert!(b.exists("vel/x".into()).await.unwrap());
            assert_eq!(b.keys().await.unwrap(), vec!["vel/x".to_string()]);
            b.delete("vel/x".into()).await.unwrap();
            assert_eq!(a.get("vel/x".into()).await.unwrap(), None);
            // The other store is on disk as before; none for the memory one.
            kv.open("default")
                .unwrap()
                .set("k".into(), b"v".to_vec())
                .await
                .unwrap();
        });
        assert!(dir.path().join("default").is_dir());
        assert!(!dir.path().join("velocity").exists());
    }

    #[test]
    fn too_long_key_is_an_error_not_a_panic() {
        let kv = KeyValue::new(None, &labels(&["default"])).unwrap();
        let s = kv.open("default").unwrap();
        rt().block_on(async {
            let ok = "x".repeat(MAX_KEY_LEN);
            s.set(ok.clone(), b"v".to_vec()).await.unwrap();
            assert_eq!(s.get(ok).await.unwrap(), Some(b"v".to_vec()));
            let long = "x".repeat(MAX_KEY_LEN + 1);
            assert!(matches!(
                s.set(long.clone(), b"v".to_vec()).await,
                Err(Error::Other(_))
            ));
            assert!(matches!(s.get(long).await, Err(Error::Other(_))));
        });
    }

    #[test]
    fn ungranted_labels_are_denied_and_undefined_ones_missing() {
        let none = KeyValue::new(None, &[]).unwrap();
        assert!(matches!(none.open("default"), Err(Error::AccessDenied)));

        let dir = tempfile::tempdir().unwrap();
        let kv = KeyValue::with_defined(
            Some(dir.path()),
            &labels(&["default", "granted-only"]),
            &labels(&["default", "defined-only"]),
            &[],
        )
        .unwrap();
        assert!(kv.open("default").is_ok());
        // Denied even though it exists: permission is checked first, as in Spin.
        assert!(matches!(kv.open("defined-only"), Err(Error::AccessDenied)));
        assert!(matches!(kv.open("nope"), Err(Error::AccessDenied)));
        assert!(matches!(kv.open("granted-only"), Err(Error::NoSuchStore)));
    }

    #[test]
    fn unsafe_labels_are_refused_at_startup() {
        for label in ["", "..", "a/b", "-x", ".tmp", &"l".repeat(65)] {
            assert!(KeyValue::new(None, &labels(&[label])).is_err(), "{label:?}");
        }
        assert!(KeyValue::new(None, &labels(&["default", "my_store-2"])).is_ok());
    }
}
